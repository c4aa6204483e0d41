//! Dynamic and static large objects.

use md5::{Digest as _, Md5};
use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::http::{account_of, call, hex};

fn md5_hex(b: &[u8]) -> String {
    hex(&Md5::digest(b))
}

#[tokio::test]
async fn dynamic_large_objects_concatenate_a_prefix() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let c = format!("{}/dlo", account_of(m));
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[]).await.status, 201);
    let segs: Vec<Vec<u8>> = (0..3).map(|i| vec![b'a' + i as u8; 100_000 + i]).collect();
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(call(&cloud, m, "PUT", &format!("{c}/big/{i:03}"), seg.clone(), &[]).await.status, 201);
    }
    let empty = [("X-Object-Manifest", "dlo/big/"), ("Content-Length", "0"), ("Content-Type", "text/x-big")];
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/big"), vec![], &empty).await.status, 201);

    let whole = segs.concat();
    let etag = md5_hex(segs.iter().map(|s| md5_hex(s)).collect::<String>().as_bytes());
    let got = call(&cloud, m, "GET", &format!("{c}/big"), vec![], &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == whole, "segments in name order");
    assert_eq!(got.h("etag"), format!("\"{etag}\""));
    assert_eq!(got.h("content-length"), whole.len().to_string());
    assert_eq!(got.h("x-object-manifest"), "dlo/big/");
    assert_eq!(got.h("content-type"), "text/x-big");
    let head = call(&cloud, m, "HEAD", &format!("{c}/big"), vec![], &[]).await;
    assert_eq!((head.h("etag"), head.h("content-length")), (got.h("etag"), got.h("content-length")));

    // A range across segment boundaries; conditions against the large object's ETag.
    let part = call(&cloud, m, "GET", &format!("{c}/big"), vec![], &[("Range", "bytes=99990-200010")]).await;
    assert_eq!(part.status, 206);
    assert!(part.body == whole[99990..=200010]);
    assert_eq!(part.h("content-range"), format!("bytes 99990-200010/{}", whole.len()));
    let same = call(&cloud, m, "GET", &format!("{c}/big"), vec![], &[("If-None-Match", &format!("\"{etag}\""))]).await;
    assert_eq!(same.status, 304);

    // The manifest itself, and a manifest set by POST (the prefix without a slash takes the manifest in too).
    let raw = call(&cloud, m, "GET", &format!("{c}/big?multipart-manifest=get"), vec![], &[]).await;
    assert_eq!((raw.status, raw.body.len()), (200, 0));
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/other"), b"head-".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "POST", &format!("{c}/other"), vec![], &[("X-Object-Manifest", "dlo/big/00")]).await.status, 202);
    let other = call(&cloud, m, "GET", &format!("{c}/other"), vec![], &[]).await;
    assert!(other.body == whole, "the manifest's own data is not part of it");
    assert_eq!(call(&cloud, m, "POST", &format!("{c}/other"), vec![], &[("X-Object-Manifest", "nocontainer")]).await.status, 400);

    // A copy of a DLO is a plain object with its content.
    let copy = call(&cloud, m, "COPY", &format!("{c}/big"), vec![], &[("Destination", "dlo/flat")]).await;
    assert_eq!(copy.status, 201);
    let flat = call(&cloud, m, "GET", &format!("{c}/flat"), vec![], &[]).await;
    assert!(flat.body == whole);
    assert!(flat.headers.get("x-object-manifest").is_none());
    assert_eq!(flat.h("etag"), md5_hex(&whole));
    cloud.shutdown().await;
}

#[tokio::test]
async fn static_large_objects_follow_their_manifest() {
    let cloud = TestCloud::start().await;
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await.json();
    assert_eq!(info["slo"]["max_manifest_segments"], 1000);
    let m = &cloud.member;
    let acct = account_of(m);
    let c = format!("{acct}/slo");
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/segs"), vec![], &[]).await.status, 201);
    let segs: Vec<Vec<u8>> = (0..3).map(|i| (0..300_000u32).map(|b| (b * (i + 3) % 251) as u8).collect()).collect();
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/segs/{i}"), seg.clone(), &[]).await.status, 201);
    }
    let manifest = json!([
        {"path": "/segs/0", "etag": md5_hex(&segs[0]), "size_bytes": 300_000},
        {"path": "segs/1", "etag": null, "size_bytes": null},
        {"path": "/segs/2", "etag": md5_hex(&segs[2]), "size_bytes": 300_000, "range": "100-199"},
        {"data": "aGVsbG8="},
    ]);
    let put = call(&cloud, m, "PUT", &format!("{c}/obj?multipart-manifest=put"), manifest.to_string().into_bytes(), &[("Content-Type", "video/x-test")]).await;
    assert_eq!(put.status, 201, "{}", put.text());
    let slo_etag = md5_hex(
        format!("{}{}{}:100-199;{}", md5_hex(&segs[0]), md5_hex(&segs[1]), md5_hex(&segs[2]), md5_hex(b"hello")).as_bytes(),
    );
    assert_eq!(put.h("etag"), format!("\"{slo_etag}\""));

    let whole = [&segs[0][..], &segs[1][..], &segs[2][100..200], b"hello"].concat();
    let got = call(&cloud, m, "GET", &format!("{c}/obj"), vec![], &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == whole);
    assert_eq!(got.h("etag"), format!("\"{slo_etag}\""));
    assert_eq!(got.h("x-static-large-object"), "True");
    assert_eq!(got.h("content-type"), "video/x-test");
    assert_eq!(got.h("content-length"), whole.len().to_string());
    let part = call(&cloud, m, "GET", &format!("{c}/obj"), vec![], &[("Range", "bytes=299990-300009")]).await;
    assert_eq!(part.status, 206);
    assert!(part.body == whole[299990..300010]);
    let tail = call(&cloud, m, "GET", &format!("{c}/obj"), vec![], &[("Range", "bytes=-8")]).await;
    assert_eq!(tail.body, [&segs[2][197..200], b"hello"].concat());

    // Listings show the assembled size and both ETags; usage counts the manifest, not the segments again.
    let listed = call(&cloud, m, "GET", &format!("{c}?format=json"), vec![], &[]).await.json();
    assert_eq!(listed[0]["bytes"], whole.len());
    assert_eq!(listed[0]["slo_etag"], format!("\"{slo_etag}\""));
    let head = call(&cloud, m, "HEAD", &c, vec![], &[]).await;
    let stored: u64 = head.h("x-container-bytes-used").parse().unwrap();
    assert!(stored < 2000, "the manifest's bytes: {stored}");

    // The manifest, stored and raw.
    let stored = call(&cloud, m, "GET", &format!("{c}/obj?multipart-manifest=get"), vec![], &[]).await;
    assert_eq!(stored.h("content-type"), "application/json; charset=utf-8");
    let stored = stored.json();
    assert_eq!(stored[1]["name"], "/segs/1");
    assert_eq!(stored[1]["hash"], md5_hex(&segs[1]));
    assert_eq!(stored[1]["bytes"], 300_000);
    let raw = call(&cloud, m, "GET", &format!("{c}/obj?multipart-manifest=get&format=raw"), vec![], &[]).await.json();
    assert_eq!(raw[2], json!({"path": "/segs/2", "etag": md5_hex(&segs[2]), "size_bytes": 300_000, "range": "100-199"}));
    assert_eq!(raw[3], json!({"data": "aGVsbG8="}));

    // A manifest can nest another SLO; a copy is plain, unless the manifest is asked for.
    let outer = json!([{"path": "/slo/obj", "etag": slo_etag, "size_bytes": whole.len()}, {"path": "/segs/0", "etag": null, "size_bytes": null}]);
    let put = call(&cloud, m, "PUT", &format!("{c}/outer?multipart-manifest=put"), outer.to_string().into_bytes(), &[]).await;
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(call(&cloud, m, "GET", &format!("{c}/outer"), vec![], &[]).await.body == [&whole[..], &segs[0][..]].concat());
    assert_eq!(call(&cloud, m, "COPY", &format!("{c}/obj"), vec![], &[("Destination", "slo/plain")]).await.status, 201);
    let plain = call(&cloud, m, "GET", &format!("{c}/plain"), vec![], &[]).await;
    assert!(plain.body == whole && plain.headers.get("x-static-large-object").is_none());
    let copy = call(&cloud, m, "COPY", &format!("{c}/obj?multipart-manifest=get"), vec![], &[("Destination", "slo/again")]).await;
    assert_eq!(copy.status, 201);
    assert_eq!(call(&cloud, m, "HEAD", &format!("{c}/again"), vec![], &[]).await.h("x-static-large-object"), "True");
    let post = call(&cloud, m, "POST", &format!("{c}/again"), vec![], &[("X-Object-Meta-Note", "kept")]).await;
    assert_eq!(post.status, 202);
    let head = call(&cloud, m, "HEAD", &format!("{c}/again"), vec![], &[]).await;
    assert_eq!((head.h("x-static-large-object"), head.h("x-object-meta-note")), ("True", "kept"));

    // Bad manifests: each problem named.
    let bad = json!([{"path": "/segs/0", "etag": "0000", "size_bytes": 300_000}, {"path": "/segs/1", "size_bytes": 5}, {"path": "/segs/nope"}]);
    let put = call(&cloud, m, "PUT", &format!("{c}/bad?multipart-manifest=put"), bad.to_string().into_bytes(), &[]).await;
    assert_eq!(put.status, 400);
    let text = put.text();
    for expected in ["/segs/0, Etag Mismatch", "/segs/1, Size Mismatch", "/segs/nope, 404 Not Found"] {
        assert!(text.contains(expected), "{text}");
    }
    let put = call(&cloud, m, "PUT", &format!("{c}/bad?multipart-manifest=put"), b"{\"path\": 1}".to_vec(), &[]).await;
    assert_eq!(put.status, 400);
    let etag_wrong = [("ETag", "0123456789abcdef0123456789abcdef")];
    let put = call(&cloud, m, "PUT", &format!("{c}/bad?multipart-manifest=put"), manifest.to_string().into_bytes(), &etag_wrong).await;
    assert_eq!(put.status, 422);
    let fake = call(&cloud, m, "PUT", &format!("{c}/fake"), b"[]".to_vec(), &[("X-Static-Large-Object", "True")]).await;
    assert_eq!(fake.status, 400);

    // Deleting with multipart-manifest=delete takes the segments along.
    let del = call(&cloud, m, "DELETE", &format!("{c}/obj?multipart-manifest=delete"), vec![], &[("Accept", "application/json")]).await;
    assert_eq!(del.status, 200);
    let report: Value = del.json();
    assert_eq!(report["Number Deleted"], 4, "{report}");
    assert_eq!(report["Response Status"], "200 OK");
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/segs/0"), vec![], &[]).await.status, 404);
    assert_eq!(call(&cloud, m, "HEAD", &format!("{c}/obj"), vec![], &[]).await.status, 404);
    let del = call(&cloud, m, "DELETE", &format!("{c}/plain?multipart-manifest=delete"), vec![], &[]).await;
    assert_eq!(del.status, 400, "not an SLO");

    // A segment replaced after the fact breaks the download instead of serving other bytes.
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/segs/x"), vec![1; 70_000], &[]).await.status, 201);
    let solo = json!([{"path": "/segs/x", "etag": null, "size_bytes": null}, {"data": "aGVsbG8="}]);
    let put = call(&cloud, m, "PUT", &format!("{c}/solo?multipart-manifest=put"), solo.to_string().into_bytes(), &[]).await;
    assert_eq!(put.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/segs/x"), vec![2; 70_000], &[]).await.status, 201);
    let resp = reqwest::Client::new()
        .get(format!("{}{c}/solo", cloud.url))
        .header("X-Auth-Token", m.token.clone().unwrap())
        .send()
        .await;
    match resp {
        Ok(resp) => assert!(resp.bytes().await.is_err(), "the body is cut short"),
        Err(e) => assert!(e.is_request(), "the connection drops: {e}"),
    }

    // With its sub-manifest gone, the nested SLO cannot be read.
    let got = call(&cloud, m, "GET", &format!("{c}/outer"), vec![], &[]).await;
    assert!(got.status != 200 || got.body.len() < whole.len() + segs[0].len(), "never the wrong bytes in full");
    cloud.shutdown().await;
}
