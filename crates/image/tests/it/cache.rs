//! The API node's image cache: misses then hits, LRU eviction at the size limit, invalid files detected and
//! removed, pre-caching through the queue, and the admin-only cache API.

use image::cache::{CacheConfig, ImageCache};
use reqwest::Method;
use serde_json::Value;
use test_utils::TestCloud;

use crate::{create_named, get_bytes, upload};

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8).collect()
}

/// Creates and uploads an image as the member; returns its id.
async fn image_with(cloud: &TestCloud, bytes: &[u8]) -> String {
    let img = create_named(&cloud.member, "cached").await;
    let id = img["id"].as_str().unwrap().to_string();
    let r = upload(cloud, &cloud.member, &id, bytes.to_vec()).await;
    assert_eq!(r.status, 204, "{}", r.text);
    id
}

/// Downloads an image whole, then waits for the cache fill the download may have started (it finishes in the
/// background) to commit or give up.
async fn download(cloud: &TestCloud, id: &str) -> Vec<u8> {
    let (status, _, body) = get_bytes(cloud, &cloud.member, &format!("/image/v2/images/{id}/file"), &[]).await;
    assert_eq!(status, 200);
    let incomplete = cache_dir(cloud).join("incomplete");
    for _ in 0..500 {
        if std::fs::read_dir(&incomplete).map(|d| d.count() == 0).unwrap_or(true) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the cache fill of {id} did not finish");
}

async fn cache_state(cloud: &TestCloud) -> Value {
    let r = cloud.admin.get("/image/v2/cache").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn cached_ids(state: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        state["cached_images"].as_array().unwrap().iter().map(|e| e["image_id"].as_str().unwrap().into()).collect();
    ids.sort();
    ids
}

fn cache_dir(cloud: &TestCloud) -> std::path::PathBuf {
    cloud.running.data_dir.join("image-cache")
}

#[tokio::test]
async fn first_download_misses_second_hits() {
    let cloud = TestCloud::start().await;
    let bytes = data(700_000, 1);
    let id = image_with(&cloud, &bytes).await;
    let before = cache_state(&cloud).await;
    assert!(cached_ids(&before).is_empty());
    assert_eq!((before["stats"]["hits"].as_u64(), before["stats"]["misses"].as_u64()), (Some(0), Some(0)));

    assert!(download(&cloud, &id).await == bytes, "first download differs");
    let state = cache_state(&cloud).await;
    assert_eq!(cached_ids(&state), vec![id.clone()]);
    assert_eq!(state["stats"]["misses"], 1);
    assert_eq!(state["stats"]["hits"], 0);
    assert_eq!(state["cached_images"][0]["size"], bytes.len());
    assert_eq!(state["cached_images"][0]["hits"], 0);
    assert_eq!(std::fs::read(cache_dir(&cloud).join(&id)).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(cache_dir(&cloud).join("incomplete")).unwrap().count(), 0);

    assert!(download(&cloud, &id).await == bytes, "cached download differs");
    let (status, _, part) =
        get_bytes(&cloud, &cloud.member, &format!("/image/v2/images/{id}/file"), &[("Range", "bytes=5-9")]).await;
    assert_eq!((status, part.as_slice()), (206, &bytes[5..10]));
    let state = cache_state(&cloud).await;
    assert_eq!(state["stats"]["hits"], 2);
    assert_eq!(state["stats"]["misses"], 1);
    assert_eq!(state["cached_images"][0]["hits"], 2);

    // Deleting the image drops its cache entry.
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 204);
    assert!(cached_ids(&cache_state(&cloud).await).is_empty());
    assert!(!cache_dir(&cloud).join(&id).exists());
}

#[tokio::test]
async fn size_limit_evicts_least_recently_used() {
    let cloud = TestCloud::start_with(|c| c.image.cache_max_size = 250_000).await;
    let (a, b, c) = (data(100_000, 1), data(100_000, 2), data(100_000, 3));
    let (ia, ib, ic) = (image_with(&cloud, &a).await, image_with(&cloud, &b).await, image_with(&cloud, &c).await);
    download(&cloud, &ia).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    download(&cloud, &ib).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // A is used again: B becomes the least recently used.
    download(&cloud, &ia).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(download(&cloud, &ic).await == c);
    let mut expected = vec![ia.clone(), ic.clone()];
    expected.sort();
    assert_eq!(cached_ids(&cache_state(&cloud).await), expected);
    assert!(!cache_dir(&cloud).join(&ib).exists());
    // B is still served, from the store, and cached again (evicting A, now the least recently used).
    assert!(download(&cloud, &ib).await == b);
    let mut expected = vec![ib, ic];
    expected.sort();
    assert_eq!(cached_ids(&cache_state(&cloud).await), expected);
}

#[tokio::test]
async fn truncated_and_stalled_files_are_detected_and_removed() {
    let cloud = TestCloud::start().await;
    let bytes = data(300_000, 7);
    let id = image_with(&cloud, &bytes).await;
    download(&cloud, &id).await;
    let file = cache_dir(&cloud).join(&id);
    assert!(file.exists());

    // A truncated cache file is never served: the download reads the store and caches the image again.
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(1000).unwrap();
    assert!(download(&cloud, &id).await == bytes, "a truncated cache file was served");
    let state = cache_state(&cloud).await;
    assert_eq!(state["stats"]["hits"], 0);
    assert_eq!(state["stats"]["misses"], 2);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), bytes.len() as u64);

    // `clean` finds a truncated file, a same-sized corrupted one, and stalled incomplete files.
    let mut config = CacheConfig::new(&cache_dir(&cloud));
    config.stall_time = std::time::Duration::ZERO;
    let cache = ImageCache::open(config).unwrap();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(10).unwrap();
    std::fs::write(cache_dir(&cloud).join("incomplete").join(format!("{id}-stalled")), b"partial").unwrap();
    let removed = cache.clean().await.unwrap();
    assert_eq!(removed.entries, 2);
    assert!(!file.exists());
    assert!(cache.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(cache_dir(&cloud).join("incomplete")).unwrap().count(), 0);

    download(&cloud, &id).await;
    let mut corrupt = std::fs::read(&file).unwrap();
    corrupt[0] ^= 0xff;
    std::fs::write(&file, corrupt).unwrap();
    assert_eq!(cache.list().unwrap().len(), 1, "same size: only the checksum tells");
    assert_eq!(cache.clean().await.unwrap().entries, 1);
    assert!(cached_ids(&cache_state(&cloud).await).is_empty());
}

#[tokio::test]
async fn queue_precaches_and_clear_targets() {
    let cloud = TestCloud::start().await;
    let bytes = data(50_000, 3);
    let id = image_with(&cloud, &bytes).await;
    let r = cloud.admin.request(Method::PUT, "/image/v2/cache/00000000-0000-0000-0000-000000000000", None, &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let queued = create_named(&cloud.member, "queued").await;
    let r = cloud
        .admin
        .request(Method::PUT, &format!("/image/v2/cache/{}", queued["id"].as_str().unwrap()), None, &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    let r = cloud.admin.request(Method::PUT, &format!("/image/v2/cache/{id}"), None, &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    // Pre-caching runs in the background; the deadline only bounds a stuck run (it took over 4 s once on a
    // loaded host, with 2 cores running the whole test suite).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut state = cache_state(&cloud).await;
    while cached_ids(&state).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        state = cache_state(&cloud).await;
    }
    assert_eq!(cached_ids(&state), vec![id.clone()]);
    assert_eq!(state["queued_images"].as_array().unwrap().len(), 0);
    assert!(download(&cloud, &id).await == bytes);
    assert_eq!(cache_state(&cloud).await["stats"]["hits"], 1);

    // Clearing: a bad target is refused, "queue" leaves the cache, no header clears both.
    let clear = |target: Option<&'static str>| {
        let admin = cloud.admin.clone();
        async move {
            let headers: Vec<(&str, &str)> = target.map(|t| ("x-image-cache-clear-target", t)).into_iter().collect();
            admin.request(Method::DELETE, "/image/v2/cache", None, &headers).await.status
        }
    };
    assert_eq!(clear(Some("invalid")).await, 400);
    assert_eq!(clear(Some("queue")).await, 204);
    assert_eq!(cached_ids(&cache_state(&cloud).await), vec![id.clone()]);
    assert_eq!(clear(None).await, 204);
    assert!(cached_ids(&cache_state(&cloud).await).is_empty());

    download(&cloud, &id).await;
    let r = cloud.admin.delete(&format!("/image/v2/cache/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(cached_ids(&cache_state(&cloud).await).is_empty());
}

#[tokio::test]
async fn cache_api_is_admin_only() {
    let cloud = TestCloud::start().await;
    let bytes = data(10_000, 5);
    let id = image_with(&cloud, &bytes).await;
    download(&cloud, &id).await;
    for client in [&cloud.member, &cloud.reader] {
        assert_eq!(client.get("/image/v2/cache").await.status, 403);
        assert_eq!(client.request(Method::PUT, &format!("/image/v2/cache/{id}"), None, &[]).await.status, 403);
        assert_eq!(client.delete(&format!("/image/v2/cache/{id}")).await.status, 403);
        assert_eq!(client.delete("/image/v2/cache").await.status, 403);
    }
    assert_eq!(cloud.anonymous.get("/image/v2/cache").await.status, 401);
    // Nothing changed.
    let state = cache_state(&cloud).await;
    assert_eq!(cached_ids(&state), vec![id]);
    assert_eq!(state["queued_images"].as_array().unwrap().len(), 0);
}
