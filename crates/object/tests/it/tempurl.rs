//! Temporary URLs and form posts: signed access without a token.

use base64::Engine as _;
use object::signature::Digest;
use test_utils::TestCloud;

use crate::http::{account_of, call, hex};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `<path>?temp_url_sig=…&temp_url_expires=…` for `method` on `path` (the path that is signed).
fn temp_url(digest: Digest, key: &str, method: &str, expires: i64, path: &str) -> String {
    let sig = hex(&digest.hmac(key.as_bytes(), format!("{method}\n{expires}\n{path}").as_bytes()));
    format!("temp_url_sig={sig}&temp_url_expires={expires}")
}

#[tokio::test]
async fn temporary_urls_grant_one_method_until_they_expire() {
    let cloud = TestCloud::start().await;
    let (m, anon) = (&cloud.member, &cloud.anonymous);
    let acct = account_of(m);
    let v1 = acct.trim_start_matches("/object-store").to_string(); // /v1/AUTH_…
    assert_eq!(call(&cloud, m, "POST", &acct, vec![], &[("X-Account-Meta-Temp-URL-Key", "secret")]).await.status, 204);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/c"), vec![], &[]).await.status, 201);
    let meta = [("X-Object-Meta-Private", "p"), ("X-Object-Meta-Public-Color", "red")];
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/c/dir/file.txt"), b"hello".to_vec(), &meta).await.status, 201);
    let obj = format!("{acct}/c/dir/file.txt");
    let exp = now() + 600;

    // GET signed over the /v1 path (as `swift tempurl` signs) or over the path clients see, in SHA-1 or SHA-256.
    for (digest, signed) in [(Digest::Sha256, format!("{v1}/c/dir/file.txt")), (Digest::Sha1, obj.clone())] {
        let got = call(&cloud, anon, "GET", &format!("{obj}?{}", temp_url(digest, "secret", "GET", exp, &signed)), vec![], &[]).await;
        assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]), "{signed}");
        assert_eq!(got.h("content-disposition"), "attachment; filename=\"file.txt\"; filename*=UTF-8''file.txt");
        assert!(got.headers.get("x-object-meta-private").is_none(), "private metadata is not shown");
        assert_eq!(got.h("x-object-meta-public-color"), "red");
        assert!(got.h("expires").ends_with("GMT"));
    }
    let get_q = temp_url(Digest::Sha256, "secret", "GET", exp, &format!("{v1}/c/dir/file.txt"));
    assert_eq!(call(&cloud, anon, "HEAD", &format!("{obj}?{get_q}"), vec![], &[]).await.status, 200, "HEAD rides on GET");
    assert_eq!(call(&cloud, anon, "DELETE", &format!("{obj}?{get_q}"), vec![], &[]).await.status, 401, "GET only");
    let inline = call(&cloud, anon, "GET", &format!("{obj}?{get_q}&inline"), vec![], &[]).await;
    assert_eq!(inline.h("content-disposition"), "inline");
    let named = call(&cloud, anon, "GET", &format!("{obj}?{get_q}&filename=my%20file.txt"), vec![], &[]).await;
    assert_eq!(named.h("content-disposition"), "attachment; filename=\"my file.txt\"; filename*=UTF-8''my%20file.txt");

    // Whatever token comes along, even an invalid one, the signature decides.
    let forged = anon.with_token(Some("forged".into()));
    assert_eq!(call(&cloud, &forged, "GET", &format!("{obj}?{get_q}"), vec![], &[]).await.status, 200);

    // SHA-512 in base64, ISO 8601 expiry.
    let iso = chrono::DateTime::from_timestamp(exp, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mac = Digest::Sha512.hmac(b"secret", format!("GET\n{exp}\n{v1}/c/dir/file.txt").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac);
    let got = call(&cloud, anon, "GET", &format!("{obj}?temp_url_sig=sha512:{sig}&temp_url_expires={iso}"), vec![], &[]).await;
    assert_eq!(got.status, 200);

    // Wrong key, expired, malformed, tampered path: 401 with a token or without.
    let bad = [
        temp_url(Digest::Sha256, "wrong", "GET", exp, &format!("{v1}/c/dir/file.txt")),
        temp_url(Digest::Sha256, "secret", "GET", now() - 1, &format!("{v1}/c/dir/file.txt")),
        temp_url(Digest::Sha256, "secret", "GET", exp, &format!("{v1}/c/dir/other.txt")),
        format!("temp_url_sig=abc&temp_url_expires={exp}"),
        format!("temp_url_expires={exp}"),
    ];
    for q in bad {
        assert_eq!(call(&cloud, anon, "GET", &format!("{obj}?{q}"), vec![], &[]).await.status, 401, "{q}");
        assert_eq!(call(&cloud, m, "GET", &format!("{obj}?{q}"), vec![], &[]).await.status, 401, "{q}");
    }

    // PUT: uploads, and HEAD works with the PUT signature; a PUT URL does not read.
    let put_q = temp_url(Digest::Sha256, "secret", "PUT", exp, &format!("{v1}/c/new"));
    assert_eq!(call(&cloud, anon, "PUT", &format!("{acct}/c/new?{put_q}"), b"uploaded".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, anon, "HEAD", &format!("{acct}/c/new?{put_q}"), vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, anon, "GET", &format!("{acct}/c/new?{put_q}"), vec![], &[]).await.status, 401);
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/c/new"), vec![], &[]).await.body, b"uploaded");
    let manifest = call(&cloud, anon, "PUT", &format!("{acct}/c/new?{put_q}"), vec![], &[("X-Object-Manifest", "c/x"), ("Content-Length", "0")]).await;
    assert_eq!(manifest.status, 400);

    // Key 2, container keys (for their own container only), prefixes.
    call(&cloud, m, "POST", &acct, vec![], &[("X-Account-Meta-Temp-URL-Key-2", "second")]).await;
    let q2 = temp_url(Digest::Sha256, "second", "GET", exp, &format!("{v1}/c/dir/file.txt"));
    assert_eq!(call(&cloud, anon, "GET", &format!("{obj}?{q2}"), vec![], &[]).await.status, 200);
    call(&cloud, m, "POST", &format!("{acct}/c"), vec![], &[("X-Container-Meta-Temp-URL-Key", "box")]).await;
    let qc = temp_url(Digest::Sha256, "box", "GET", exp, &format!("{v1}/c/dir/file.txt"));
    assert_eq!(call(&cloud, anon, "GET", &format!("{obj}?{qc}"), vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/d"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/d/o"), b"d".to_vec(), &[]).await.status, 201);
    let qd = temp_url(Digest::Sha256, "box", "GET", exp, &format!("{v1}/d/o"));
    assert_eq!(call(&cloud, anon, "GET", &format!("{acct}/d/o?{qd}"), vec![], &[]).await.status, 401);
    let sig = hex(&Digest::Sha256.hmac(b"secret", format!("GET\n{exp}\nprefix:{v1}/c/dir/").as_bytes()));
    let qp = format!("temp_url_sig={sig}&temp_url_expires={exp}&temp_url_prefix=dir/");
    assert_eq!(call(&cloud, anon, "GET", &format!("{obj}?{qp}"), vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, anon, "GET", &format!("{acct}/c/new?{qp}"), vec![], &[]).await.status, 401);

    // The keys are an operator's secret.
    let info = call(&cloud, anon, "GET", "/object-store/info", vec![], &[]).await.json();
    assert_eq!(info["tempurl"]["allowed_digests"], serde_json::json!(["sha1", "sha256", "sha512"]));
    assert!(info["formpost"].is_object());
    cloud.shutdown().await;
}

fn form(fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let boundary = "--boundary--";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    for (name, data) in files {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\nContent-Type: text/x-test\r\n\r\n")
                .as_bytes(),
        );
        body.extend(*data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

#[tokio::test]
async fn form_posts_upload_files_without_a_token() {
    let cloud = TestCloud::start().await;
    let (m, anon) = (&cloud.member, &cloud.anonymous);
    let acct = account_of(m);
    assert_eq!(call(&cloud, m, "POST", &acct, vec![], &[("X-Account-Meta-Temp-URL-Key", "formkey")]).await.status, 204);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/up"), vec![], &[]).await.status, 201);
    let path = format!("{acct}/up/pre-");
    let sign = |key: &str, redirect: &str, size: &str, count: &str, expires: &str| {
        hex(&Digest::Sha1.hmac(key.as_bytes(), format!("{path}\n{redirect}\n{size}\n{count}\n{expires}").as_bytes()))
    };
    let exp = (now() + 600).to_string();
    let sig = sign("formkey", "", "1024", "2", &exp);
    let fields = [("redirect", ""), ("max_file_size", "1024"), ("max_file_count", "2"), ("expires", exp.as_str()), ("signature", sig.as_str())];

    let (body, ct) = form(&fields, &[("a.txt", b"hello world"), ("b.txt", b"second")]);
    let posted = call(&cloud, anon, "POST", &path, body, &[("Content-Type", &ct)]).await;
    assert_eq!((posted.status, posted.text().as_str()), (201, "201 Created"));
    let a = call(&cloud, m, "GET", &format!("{acct}/up/pre-a.txt"), vec![], &[]).await;
    assert_eq!((a.body.as_slice(), a.h("content-type")), (&b"hello world"[..], "text/x-test"));
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/up/pre-b.txt"), vec![], &[]).await.body, b"second");

    // Too many files, too big a file.
    let (body, ct) = form(&fields, &[("1", b"1"), ("2", b"2"), ("3", b"3")]);
    let posted = call(&cloud, anon, "POST", &path, body, &[("Content-Type", &ct)]).await;
    assert_eq!((posted.status, posted.text().as_str()), (400, "400 Bad Request\r\nFormPost: Max File Count Exceeded"));
    let big = vec![b'x'; 2000];
    let (body, ct) = form(&fields, &[("big", &big)]);
    let posted = call(&cloud, anon, "POST", &path, body, &[("Content-Type", &ct)]).await;
    assert_eq!((posted.status, posted.text().as_str()), (400, "FormPost: max_file_size exceeded"));
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/up/pre-big"), vec![], &[]).await.status, 404);

    // Bad signature, expired form: 401.
    let bad = sign("wrong", "", "1024", "2", &exp);
    let (body, ct) = form(&[("max_file_size", "1024"), ("max_file_count", "2"), ("expires", &exp), ("signature", &bad)], &[("x", b"x")]);
    let posted = call(&cloud, anon, "POST", &path, body, &[("Content-Type", &ct)]).await;
    assert_eq!((posted.status, posted.text().as_str()), (401, "FormPost: Invalid Signature"));
    let past = (now() - 5).to_string();
    let old = sign("formkey", "", "1024", "2", &past);
    let (body, ct) = form(&[("max_file_size", "1024"), ("max_file_count", "2"), ("expires", &past), ("signature", &old)], &[("x", b"x")]);
    let posted = call(&cloud, anon, "POST", &path, body, &[("Content-Type", &ct)]).await;
    assert_eq!((posted.status, posted.text().as_str()), (401, "FormPost: Form Expired"));

    // A redirect is followed by status and message; a form to the container itself names objects by file name.
    let cpath = format!("{acct}/up/");
    let csig = hex(&Digest::Sha1.hmac(b"formkey", format!("{cpath}\nhttps://example.com/done\n1024\n1\n{exp}").as_bytes()));
    let fields = [("redirect", "https://example.com/done"), ("max_file_size", "1024"), ("max_file_count", "1"), ("expires", &exp), ("signature", &csig)];
    let (body, ct) = form(&fields, &[("root.txt", b"root")]);
    let posted = call(&cloud, anon, "POST", &cpath, body, &[("Content-Type", &ct)]).await;
    assert_eq!(posted.status, 303);
    assert_eq!(posted.h("location"), "https://example.com/done?status=201&message=");
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/up/root.txt"), vec![], &[]).await.body, b"root");
    cloud.shutdown().await;
}
