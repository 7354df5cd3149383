//! Exhaustion from one client: 2,000 idle TLS connections, 1,000 open watches, slow request
//! bodies and back-to-back lists of a whole collection, against one `atrest serve`. The
//! server must stay under 256 MiB and keep answering another client; each bound past which
//! it refuses is a `serve` flag, and a second server with small bounds shows each refusal.
//!
//! Latencies of the other client are printed (RELIABILITY.md), never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_client::KubeClient;
use atrest_testkit::AtrestServer;
use common::atrest_bin;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RSS_LIMIT_KIB: u64 = 256 * 1024;
const SECRETS: usize = 2_000;

fn raise_open_files() {
    let n = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        n >= 8_000,
        "this test needs 8,000 open files, the hard limit is {n}"
    );
}

/// The head of an HTTP/1.1 answer (status code, then the header text), read from `stream`.
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// Whether the server has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// What another client sees meanwhile: `n` gets of one secret and one create, each of which
/// must succeed; the slowest answer is returned for the record.
async fn other_client(client: &KubeClient, label: &str, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let started = Instant::now();
        let r = client
            .request(
                http::Method::GET,
                "/api/v1/namespaces/default/secrets/s-0",
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: the other client's get failed: {e}"));
        assert_eq!(
            r.status,
            200,
            "{label}: {}",
            String::from_utf8_lossy(&r.body)
        );
        slowest = slowest.max(started.elapsed());
        if i == 0 {
            let started = Instant::now();
            static CREATES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = CREATES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("other-{}-{n}", label.replace(' ', "-"));
            let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"v": "eA=="}});
            let r = client
                .request(
                    http::Method::POST,
                    "/api/v1/namespaces/default/secrets",
                    Some(&body),
                )
                .await
                .unwrap();
            assert_eq!(
                r.status,
                201,
                "{label}: {}",
                String::from_utf8_lossy(&r.body)
            );
            slowest = slowest.max(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

fn rss(server: &AtrestServer, label: &str) -> u64 {
    let kib = server.rss_kib().unwrap();
    println!("{label}: server RSS {} MiB", kib / 1024);
    assert!(
        kib < RSS_LIMIT_KIB,
        "{label}: server RSS {kib} KiB is over 256 MiB"
    );
    kib
}

#[test]
fn one_client_cannot_exhaust_the_server() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    // Timeouts shortened so the phases finish quickly; every other bound is the default.
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--request-timeout-seconds",
            "3",
            "--idle-connection-timeout-seconds",
            "600",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Arc::new(KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap());
        let other = KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap();
        // A collection worth listing: 2,000 secrets of 1 KiB.
        let payload = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            vec![b'x'; 1024],
        );
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let client = client.clone();
            let payload = payload.clone();
            tasks.push(tokio::spawn(async move {
                for i in (worker..SECRETS).step_by(16) {
                    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s-{i}")}, "data": {"v": payload}});
                    let r = client
                        .request(http::Method::POST, "/api/v1/namespaces/default/secrets", Some(&body))
                        .await
                        .unwrap();
                    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let baseline = rss(&server, "after 2,000 creates");
        let mut figures = vec![format!("baseline RSS {} MiB", baseline / 1024)];

        // 1. 2,000 idle TLS connections.
        let mut idle = Vec::new();
        for _ in 0..2_000 {
            idle.push(client.open_tls().await.unwrap());
        }
        let slowest = other_client(&other, "2000 idle connections", 20).await;
        let kib = rss(&server, "2,000 idle TLS connections");
        figures.push(format!(
            "2,000 idle TLS connections: RSS {} MiB, slowest other answer {} ms",
            kib / 1024,
            slowest.as_millis()
        ));

        // 2. 1,000 open watches, each on its own connection, as informers hold them.
        let list = other.get_json("/api/v1/namespaces/default/secrets?limit=1").await.unwrap();
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let mut watches = Vec::new();
        for _ in 0..1_000 {
            let mut tls = client.open_tls().await.unwrap();
            let path = format!("/api/v1/namespaces/default/secrets?watch=1&resourceVersion={rv}");
            tls.write_all(&client.request_head("GET", &path, None)).await.unwrap();
            let (code, head) = read_head(&mut tls).await.expect("a watch answer");
            assert_eq!(code, 200, "{head}");
            watches.push(tls);
        }
        let slowest = other_client(&other, "1000 watches", 20).await;
        // The create above is an event every watch sees.
        for w in watches.iter_mut().step_by(100) {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !atrest_testkit::contains(&seen, b"other-1000-watches") {
                let n = tokio::time::timeout(Duration::from_secs(10), w.read(&mut buf))
                    .await
                    .expect("the watch delivers the event")
                    .unwrap();
                assert!(n > 0, "the watch ended");
                seen.extend_from_slice(&buf[..n]);
            }
        }
        let kib = rss(&server, "1,000 watches");
        figures.push(format!(
            "1,000 watches (with the 2,000 idle connections): RSS {} MiB, slowest other answer {} ms",
            kib / 1024,
            slowest.as_millis()
        ));
        drop(watches);
        drop(idle);

        // 3. 500 slow request bodies: a head promising 1 MiB, then a trickle, then nothing.
        let mut slow = Vec::new();
        for _ in 0..500 {
            let mut tls = client.open_tls().await.unwrap();
            tls.write_all(&client.request_head("POST", "/api/v1/namespaces/default/secrets", Some(1 << 20)))
                .await
                .unwrap();
            tls.write_all(&[b' '; 4096]).await.unwrap();
            slow.push(tls);
        }
        let slowest = other_client(&other, "500 slow bodies", 20).await;
        let kib = rss(&server, "500 slow bodies");
        // Each is answered 408 once --request-timeout-seconds (3 s here) has passed.
        for tls in slow.iter_mut() {
            let (code, head) = tokio::time::timeout(Duration::from_secs(30), read_head(tls))
                .await
                .expect("an answer to the slow body")
                .expect("a status line");
            assert_eq!(code, 408, "{head}");
        }
        figures.push(format!(
            "500 slow request bodies: RSS {} MiB, slowest other answer {} ms, each answered 408 after --request-timeout-seconds",
            kib / 1024,
            slowest.as_millis()
        ));
        drop(slow);

        // 4. Lists of everything (2,000 secrets, no limit) from 32 concurrent loops for 8 s.
        let until = Instant::now() + Duration::from_secs(8);
        let mut listers = Vec::new();
        for _ in 0..32 {
            let client = client.clone();
            listers.push(tokio::spawn(async move {
                let (mut lists, mut refused) = (0, 0);
                while Instant::now() < until {
                    let r = client
                        .request(http::Method::GET, "/api/v1/secrets", None)
                        .await
                        .unwrap();
                    if r.status == 429 {
                        // Waited past --request-timeout-seconds for a turn: retry after
                        // Retry-After, as client-go does.
                        refused += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body[..r.body.len().min(300)]));
                    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    assert!(list["items"].as_array().unwrap().len() > SECRETS);
                    lists += 1;
                }
                (lists, refused)
            }));
        }
        let mut peak = 0;
        let mut slowest = Duration::ZERO;
        while Instant::now() < until {
            slowest = slowest.max(other_client(&other, "unpaged lists", 5).await);
            peak = peak.max(rss(&server, "unpaged lists"));
        }
        let (mut lists, mut refused) = (0, 0);
        for l in listers {
            let (l, r) = l.await.unwrap();
            lists += l;
            refused += r;
        }
        assert!(lists > 0, "no unpaged list was served");
        figures.push(format!(
            "{lists} unpaged lists of {SECRETS} secrets from 32 loops in 8 s ({refused} answered 429, retried): peak RSS {} MiB, slowest other answer {} ms",
            peak / 1024,
            slowest.as_millis()
        ));
        println!("exhaustion figures:\n  {}", figures.join("\n  "));
    });
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn each_bound_is_a_flag_and_refusals_say_which() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let server = AtrestServer::start(
        &atrest_bin(),
        &dir.path().join("data"),
        &[
            "--max-watches",
            "2",
            "--max-connections",
            "12",
            "--idle-connection-timeout-seconds",
            "1",
            "--tls-handshake-timeout-seconds",
            "1",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap();
        // Watches past --max-watches: 429 with Retry-After, naming the flag.
        let mut watches = Vec::new();
        for _ in 0..2 {
            let mut tls = client.open_tls().await.unwrap();
            let head = client.request_head(
                "GET",
                "/api/v1/namespaces/default/secrets?watch=1&resourceVersion=1",
                None,
            );
            tls.write_all(&head).await.unwrap();
            assert_eq!(read_head(&mut tls).await.unwrap().0, 200);
            watches.push(tls);
        }
        let r = client
            .request(
                http::Method::GET,
                "/api/v1/namespaces/default/secrets?watch=1&resourceVersion=1",
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 429);
        let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(status["reason"], "TooManyRequests");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("--max-watches"),
            "{status}"
        );
        // A watch is not idle: the two are still open past the idle timeout.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for w in watches.iter_mut() {
            assert!(
                !closed_within(w, Duration::from_millis(200)).await,
                "an open watch was closed as idle"
            );
        }
        drop(watches);
        // The slots come back when the watches end.
        let mut freed = false;
        for _ in 0..50 {
            let r = client
                .request(
                    http::Method::GET,
                    "/api/v1/namespaces/default/secrets?watch=1&resourceVersion=1&timeoutSeconds=1",
                    None,
                )
                .await
                .unwrap();
            if r.status == 200 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(freed, "the watch slots were not given back");

        // An idle connection is closed after --idle-connection-timeout-seconds.
        let mut idle = client.open_tls().await.unwrap();
        assert!(
            closed_within(&mut idle, Duration::from_secs(10)).await,
            "an idle connection stayed open"
        );
        // So is a keep-alive connection after its last answer.
        let mut kept = client.open_tls().await.unwrap();
        kept.write_all(&client.request_head("GET", "/api/v1/namespaces", None))
            .await
            .unwrap();
        assert_eq!(read_head(&mut kept).await.unwrap().0, 200);
        assert!(
            closed_within(&mut kept, Duration::from_secs(10)).await,
            "an idle keep-alive connection stayed open"
        );

        // A client that never finishes the TLS handshake is cut off.
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        assert!(
            closed_within(&mut raw, Duration::from_secs(10)).await,
            "a half-open handshake stayed open"
        );

        // Past --max-connections, new connections are closed at once; those open still work.
        // (The client's pooled connections have been closed as idle by now.)
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut held = Vec::new();
        for _ in 0..12 {
            let mut tls = client.open_tls().await.unwrap();
            tls.write_all(&client.request_head("GET", "/api/v1/namespaces", None))
                .await
                .unwrap();
            assert_eq!(read_head(&mut tls).await.unwrap().0, 200);
            held.push(tls);
        }
        let refused = client.open_tls().await;
        match refused {
            Err(_) => {}
            Ok(mut tls) => assert!(
                closed_within(&mut tls, Duration::from_secs(5)).await,
                "connection 13 was served"
            ),
        }
        drop(held);
    });
    // The refusal is counted.
    let metrics = server.kubectl().ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("atrest_refused_connections_total"),
        "no refusal metric"
    );
    let help = std::process::Command::new(atrest_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--max-connections",
        "--tls-handshake-timeout-seconds",
        "--idle-connection-timeout-seconds",
        "--request-timeout-seconds",
        "--max-request-body-mib-in-flight",
        "--max-requests-inflight",
        "--max-watches",
        "--max-unpaged-lists-inflight",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
}
