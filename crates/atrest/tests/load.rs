//! Mixed load from 50 concurrent clients on both stores: creates, updates, merge patches,
//! gets, lists and deletes of encrypted secrets across 10 namespaces, with one kubectl
//! watch per namespace. Every client keeps its own record of what it did; afterwards the
//! store holds exactly that, and every watch saw every change of its namespace once, in
//! order.
//!
//! `ATREST_LOAD_SECONDS` sets the duration (default 10; RELIABILITY.md's figure uses 60).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_client::KubeClient;
use atrest_testkit::etcd::EtcdCluster;
use atrest_testkit::AtrestServer;
use base64::Engine as _;
use common::{aesgcm_secrets_config, atrest_bin, watch_events};
use serde_json::{json, Value};

const NAMESPACES: usize = 10;
const CLIENTS_PER_NAMESPACE: usize = 5;
const OBJECTS_PER_CLIENT: u64 = 8;

fn seconds() -> u64 {
    std::env::var("ATREST_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A small deterministic generator (xorshift64*): each client's operation mix differs and a
/// failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn value_of(object: &Value) -> String {
    let encoded = object["data"]["v"].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

/// What one client did.
#[derive(Debug, Default)]
struct Record {
    /// name -> (value, resourceVersion) of its live objects.
    live: BTreeMap<String, (String, String)>,
    /// Successful creates, updates, patches and deletes: each is one watch event.
    mutations: usize,
    operations: BTreeMap<&'static str, usize>,
    /// Answers nobody should get (anything but the expected status).
    unexpected: Vec<String>,
}

async fn run_client(
    client: Arc<KubeClient>,
    namespace: String,
    id: usize,
    until: Instant,
) -> Record {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut record = Record::default();
    let base = format!("/api/v1/namespaces/{namespace}/secrets");
    let mut counter = 0u64;
    while Instant::now() < until {
        counter += 1;
        let name = format!("c{id}-o{}", rng.next() % OBJECTS_PER_CLIENT);
        let value = format!("client {id} write {counter}");
        let live = record.live.get(&name).cloned();
        let pick = rng.next() % 100;
        let (op, method, path, content_type, body, expected): (
            &'static str,
            http::Method,
            String,
            Option<&str>,
            Vec<u8>,
            u16,
        ) = match (&live, pick) {
            (None, _) => (
                "create",
                http::Method::POST,
                base.clone(),
                Some("application/json"),
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name}, "data": {"v": b64(&value)}})
                .to_string()
                .into_bytes(),
                201,
            ),
            (Some((_, rv)), 0..=19) => (
                "update",
                http::Method::PUT,
                format!("{base}/{name}"),
                Some("application/json"),
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
                       "data": {"v": b64(&value)}})
                .to_string()
                .into_bytes(),
                200,
            ),
            (Some(_), 20..=39) => (
                "patch",
                http::Method::PATCH,
                format!("{base}/{name}"),
                Some("application/merge-patch+json"),
                json!({"data": {"v": b64(&value)}}).to_string().into_bytes(),
                200,
            ),
            (Some(_), 40..=64) => (
                "get",
                http::Method::GET,
                format!("{base}/{name}"),
                None,
                Vec::new(),
                200,
            ),
            (Some(_), 65..=79) => (
                "list",
                http::Method::GET,
                base.clone(),
                None,
                Vec::new(),
                200,
            ),
            (Some(_), _) => (
                "delete",
                http::Method::DELETE,
                format!("{base}/{name}"),
                None,
                Vec::new(),
                200,
            ),
        };
        *record.operations.entry(op).or_default() += 1;
        let answer = match client
            .request_bytes(method, &path, content_type, body)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                record.unexpected.push(format!("{op} {path}: {e}"));
                continue;
            }
        };
        if answer.status != expected {
            record.unexpected.push(format!(
                "{op} {path}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
            continue;
        }
        let object: Value = serde_json::from_slice(&answer.body).unwrap();
        match op {
            "create" | "update" | "patch" => {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if value_of(&object) != value {
                    record
                        .unexpected
                        .push(format!("{op} {path}: answered another value"));
                }
                record.live.insert(name, (value, rv));
                record.mutations += 1;
            }
            "delete" => {
                record.live.remove(&name);
                record.mutations += 1;
            }
            "get" => {
                let (want, rv) = live.unwrap();
                if value_of(&object) != want
                    || object["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
                {
                    record
                        .unexpected
                        .push(format!("get {path}: not what this client wrote"));
                }
            }
            _ => {
                // A list at the latest revision shows this client's objects as it left them.
                let mine: BTreeMap<String, String> = object["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|o| {
                        o["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .starts_with(&format!("c{id}-"))
                    })
                    .map(|o| {
                        (
                            o["metadata"]["name"].as_str().unwrap().to_string(),
                            value_of(o),
                        )
                    })
                    .collect();
                let want: BTreeMap<String, String> = record
                    .live
                    .iter()
                    .map(|(n, (v, _))| (n.clone(), v.clone()))
                    .collect();
                if mine != want {
                    record
                        .unexpected
                        .push(format!("list {path}: differs from the record"));
                }
            }
        }
    }
    record
}

async fn mixed_load(store_args: &[&str], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let enc = aesgcm_secrets_config(dir.path());
    let mut args = vec!["--encryption-provider-config", enc.to_str().unwrap()];
    args.extend_from_slice(store_args);
    let server = AtrestServer::start(&atrest_bin(), &dir.path().join("data"), &args);
    let client = Arc::new(KubeClient::from_kubeconfig(&server.kubeconfig()).unwrap());
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("load-{i}")).collect();
    let kubectl = server.kubectl();
    let mut watches = Vec::new();
    for ns in &namespaces {
        let created = client
            .request(
                http::Method::POST,
                "/api/v1/namespaces",
                Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201);
        let out = dir.path().join(format!("{ns}.watch"));
        let child = kubectl
            .command(&[
                "get",
                "secrets",
                "-n",
                ns,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join(format!("{ns}.err"))).unwrap())
            .spawn()
            .unwrap();
        watches.push((ns.clone(), out, child));
    }
    // The watches are open once each has seen a marker secret.
    for ns in &namespaces {
        let marker = client
            .request(
                http::Method::POST,
                &format!("/api/v1/namespaces/{ns}/secrets"),
                Some(
                    &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "marker"}}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(marker.status, 201);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (ns, out, _) in &watches {
        while watch_events(out).is_empty() {
            assert!(Instant::now() < deadline, "the watch of {ns} never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let rss_start = server.rss_kib().unwrap();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds());
    let mut tasks = Vec::new();
    for (n, ns) in namespaces.iter().enumerate() {
        for c in 0..CLIENTS_PER_NAMESPACE {
            tasks.push((
                n,
                tokio::spawn(run_client(
                    client.clone(),
                    ns.clone(),
                    n * CLIENTS_PER_NAMESPACE + c,
                    until,
                )),
            ));
        }
    }
    let mut rss_peak = rss_start;
    let mut rss_samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(rss) = server.rss_kib() {
            rss_peak = rss_peak.max(rss);
            rss_samples.push(rss);
        }
    }
    let mut records: Vec<(usize, Record)> = Vec::new();
    for (n, task) in tasks {
        records.push((n, task.await.unwrap()));
    }
    let elapsed = started.elapsed();
    let unexpected: Vec<&String> = records.iter().flat_map(|(_, r)| &r.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers, first: {:?}",
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    );

    // The store holds exactly what the clients' records say.
    for ns in &namespaces {
        let list = client
            .get_json(&format!("/api/v1/namespaces/{ns}/secrets"))
            .await
            .unwrap();
        let stored: BTreeMap<String, String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["metadata"]["name"] != "marker")
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    value_of(o),
                )
            })
            .collect();
        let recorded: BTreeMap<String, String> = records
            .iter()
            .filter(|(n, _)| namespaces[*n] == *ns)
            .flat_map(|(_, r)| r.live.iter().map(|(k, (v, _))| (k.clone(), v.clone())))
            .collect();
        assert_eq!(stored, recorded, "namespace {ns}");
    }

    // Every watch saw every change of its namespace, once, in resourceVersion order, and
    // its last event per object agrees with the record.
    let mut events_total = 0;
    for (n, (ns, out, child)) in watches.iter_mut().enumerate() {
        let mutations: usize = records
            .iter()
            .filter(|(i, _)| *i == n)
            .map(|(_, r)| r.mutations)
            .sum();
        let deadline = Instant::now() + Duration::from_secs(60);
        let events = loop {
            let events = watch_events(out);
            // The marker's ADDED comes first.
            if events.len() > mutations || Instant::now() > deadline {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            child.try_wait().unwrap().is_none(),
            "the watch of {ns} ended early: {}",
            std::fs::read_to_string(dir.path().join(format!("{ns}.err"))).unwrap()
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            events.len(),
            mutations + 1,
            "watch of {ns}: events vs writes"
        );
        let mut last_rv = 0i64;
        let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
        for event in &events {
            let rv: i64 = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(rv > last_rv, "watch of {ns}: out of order at {event}");
            last_rv = rv;
            let name = event["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            last.insert(
                name,
                (
                    event["type"].as_str().unwrap().to_string(),
                    value_of(&event["object"]),
                ),
            );
        }
        for (_, record) in records.iter().filter(|(i, _)| *i == n) {
            for (name, (value, _)) in &record.live {
                let (kind, seen) = &last[name];
                assert!(kind != "DELETED" && seen == value, "watch of {ns}: {name}");
            }
        }
        events_total += events.len();
    }
    let operations = records.iter().fold(BTreeMap::new(), |mut all, (_, r)| {
        for (op, count) in &r.operations {
            *all.entry(*op).or_insert(0usize) += count;
        }
        all
    });
    let total: usize = operations.values().sum();
    let rss_end = server.rss_kib().unwrap();
    // Memory stays bounded (a leak of even a few hundred bytes per request would show).
    assert!(rss_end < 256 * 1024, "RSS {rss_end} KiB after the load");
    println!(
        "figure: mixed load on {what}: {} clients for {elapsed:.0?}: {total} requests \
         ({:.0}/s) {operations:?}, 0 unexpected errors; final objects equal the clients' \
         records; {NAMESPACES} watches delivered {events_total} events, 0 missed, 0 \
         duplicated, in order; RSS {} MiB at start, peak {} MiB, {} MiB at the end; \
         every 10 s: {:?} MiB",
        NAMESPACES * CLIENTS_PER_NAMESPACE,
        total as f64 / elapsed.as_secs_f64(),
        rss_start / 1024,
        rss_peak / 1024,
        rss_end / 1024,
        rss_samples
            .iter()
            .step_by(10)
            .map(|kib| kib / 1024)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_of_mixed_load_on_the_embedded_store() {
    mixed_load(&[], "the embedded store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_of_mixed_load_on_etcd() {
    let etcd = EtcdCluster::single();
    let endpoints = etcd.endpoints().join(",");
    mixed_load(&["--etcd-servers", &endpoints], "etcd").await;
}
