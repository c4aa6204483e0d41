//! Bulk delete and archive extraction.

use std::io::Write as _;

use serde_json::Value;
use test_utils::TestCloud;

use crate::http::{account_of, call};

/// A ustar archive: a directory entry, then the files.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }
    let mut out = header("box/", 0, b'5');
    for (name, data) in files {
        out.extend(header(name, data.len(), b'0'));
        out.extend(*data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend(vec![0u8; 1024]);
    out
}

#[tokio::test]
async fn archives_are_extracted_into_containers() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let acct = account_of(m);
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await.json();
    assert_eq!(info["bulk_delete"]["max_deletes_per_request"], 10000);
    assert!(info["bulk_upload"].is_object());

    // At the account: the first path component names the container, created as needed.
    let big = vec![7u8; 300_000];
    let archive = tar(&[("box/a.txt", b"alpha"), ("./box/sub/b.bin", &big), ("other/c", b"gamma"), ("rootfile", b"x")]);
    let put = call(&cloud, m, "PUT", &format!("{acct}?extract-archive=tar"), archive, &[("X-Object-Meta-Batch", "one")]).await;
    assert_eq!(put.status, 200);
    assert_eq!(put.h("content-type"), "text/plain");
    assert_eq!(put.text(), "Number Files Created: 3\nResponse Body: \nResponse Status: 400 Bad Request\nErrors:\nrootfile, 400 Bad Request\n");
    let a = call(&cloud, m, "GET", &format!("{acct}/box/a.txt"), vec![], &[]).await;
    assert_eq!((a.body.as_slice(), a.h("x-object-meta-batch")), (&b"alpha"[..], "one"));
    assert!(call(&cloud, m, "GET", &format!("{acct}/box/sub/b.bin"), vec![], &[]).await.body == big);
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/other/c"), vec![], &[]).await.body, b"gamma");

    // Into a container under a prefix, gzip and bzip2, a JSON report.
    let archive = tar(&[("x", b"1"), ("./y", b"2")]);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&archive).unwrap();
        e.finish().unwrap()
    };
    let put = call(&cloud, m, "PUT", &format!("{acct}/box/pre?extract-archive=tar.gz"), gz, &[("Accept", "application/json")]).await;
    assert_eq!(put.status, 200);
    let report: Value = put.json();
    assert_eq!(report["Number Files Created"], 2);
    assert_eq!(report["Response Status"], "201 Created");
    assert_eq!(report["Errors"], serde_json::json!([]));
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/box/pre/y"), vec![], &[]).await.body, b"2");
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&archive).unwrap();
        e.finish().unwrap()
    };
    let put = call(&cloud, m, "PUT", &format!("{acct}/other?extract-archive=tar.bz2"), bz, &[]).await;
    assert!(put.text().contains("Number Files Created: 2"), "{}", put.text());

    // Bad archives and formats.
    let put = call(&cloud, m, "PUT", &format!("{acct}?extract-archive=zip"), b"PK".to_vec(), &[]).await;
    assert_eq!((put.status, put.text().as_str()), (400, "Unsupported archive format"));
    let put = call(&cloud, m, "PUT", &format!("{acct}?extract-archive=tar"), vec![1u8; 1024], &[]).await;
    assert_eq!(put.status, 200);
    assert!(put.text().contains("Response Status: 400 Bad Request") && put.text().contains("Invalid Tar File"), "{}", put.text());

    // Anonymous callers create nothing; another project's member neither.
    let put = call(&cloud, &cloud.anonymous, "PUT", &format!("{acct}?extract-archive=tar"), tar(&[("box/z", b"z")]), &[]).await;
    assert!(put.text().contains("box/z, 401 Unauthorized"), "{}", put.text());
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/box/z"), vec![], &[]).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn bulk_deletes_objects_then_containers() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let acct = account_of(m);
    for c in ["box", "full"] {
        assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/{c}"), vec![], &[]).await.status, 201);
    }
    for o in ["box/a b", "box/c", "full/keep"] {
        assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/{o}"), b"x".to_vec(), &[]).await.status, 201);
    }
    let body = b"box/a%20b\n/box/c\n\nbox/missing\nbox\nfull\n".to_vec();
    let del = call(&cloud, m, "DELETE", &format!("{acct}?bulk-delete"), body, &[("Content-Type", "text/plain")]).await;
    assert_eq!(del.status, 200);
    assert_eq!(
        del.text(),
        "Number Deleted: 3\nNumber Not Found: 1\nResponse Body: \nResponse Status: 400 Bad Request\nErrors:\n/full, 409 Conflict\n"
    );
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/box"), vec![], &[]).await.status, 404);

    // POST works the same; anonymous callers delete nothing.
    let anon = call(&cloud, &cloud.anonymous, "POST", &format!("{acct}?bulk-delete"), b"full/keep".to_vec(), &[]).await;
    assert!(anon.text().contains("/full/keep, 401 Unauthorized"), "{}", anon.text());
    let post = call(&cloud, m, "POST", &format!("{acct}?bulk-delete"), b"full/keep\nfull".to_vec(), &[("Accept", "application/json")]).await;
    assert_eq!(post.status, 200);
    let report: Value = post.json();
    assert_eq!((report["Number Deleted"].as_u64(), report["Response Status"].as_str()), (Some(2), Some("200 OK")));
    let listed = call(&cloud, m, "GET", &acct, vec![], &[]).await;
    assert_eq!(listed.status, 204, "{}", listed.text());
    cloud.shutdown().await;
}
