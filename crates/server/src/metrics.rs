//! Prometheus metrics in the text exposition format, under upstream's names.
//!
//! A small hand-rolled registry: counters and histograms keyed by label values, enough for
//! the request and storage-transformation metrics without another dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
struct HistogramFamily {
    help: &'static str,
    bounds: Vec<f64>,
    series: BTreeMap<Vec<(String, String)>, Histogram>,
}

#[derive(Debug)]
struct CounterFamily {
    help: &'static str,
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, CounterFamily>>,
    histograms: Mutex<BTreeMap<&'static str, HistogramFamily>>,
}

fn key(labels: Labels) -> Vec<(String, String)> {
    labels
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Upstream's storage transformation buckets: 5µs × 2^n, 25 buckets.
pub fn transformation_buckets() -> Vec<f64> {
    (0..25).map(|i| 5e-6 * 2f64.powi(i)).collect()
}

/// Request latency buckets (seconds).
pub fn request_buckets() -> Vec<f64> {
    vec![
        0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
        10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
    ]
}

impl Metrics {
    fn lock_counters(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, CounterFamily>> {
        // Each update is a single map operation: a poisoned lock still holds consistent data.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_histograms(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, HistogramFamily>> {
        self.histograms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inc(&self, name: &'static str, help: &'static str, labels: Labels) {
        self.add(name, help, labels, 1.0);
    }

    pub fn add(&self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        let mut c = self.lock_counters();
        let fam = c.entry(name).or_insert_with(|| CounterFamily {
            help,
            kind: "counter",
            series: BTreeMap::new(),
        });
        *fam.series.entry(key(labels)).or_default() += v;
    }

    pub fn set_gauge(&self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        let mut c = self.lock_counters();
        let fam = c.entry(name).or_insert_with(|| CounterFamily {
            help,
            kind: "gauge",
            series: BTreeMap::new(),
        });
        fam.series.insert(key(labels), v);
    }

    /// Replaces every series of a gauge (for info-style gauges with one live series).
    pub fn reset_gauge(&self, name: &'static str) {
        if let Some(fam) = self.lock_counters().get_mut(name) {
            fam.series.clear();
        }
    }

    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        bounds: fn() -> Vec<f64>,
        labels: Labels,
        value: Duration,
    ) {
        let secs = value.as_secs_f64();
        let mut h = self.lock_histograms();
        let fam = h.entry(name).or_insert_with(|| HistogramFamily {
            help,
            bounds: bounds(),
            series: BTreeMap::new(),
        });
        let n = fam.bounds.len();
        let series = fam.series.entry(key(labels)).or_insert_with(|| Histogram {
            buckets: vec![0; n],
            ..Default::default()
        });
        for (i, b) in fam.bounds.iter().enumerate() {
            if secs <= *b {
                series.buckets[i] += 1;
            }
        }
        series.sum += secs;
        series.count += 1;
    }

    /// The value of one counter series (for tests and health reporting).
    pub fn counter_value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let c = self.lock_counters();
        let Some(fam) = c.get(name) else { return 0.0 };
        fam.series
            .iter()
            .filter(|(k, _)| {
                labels
                    .iter()
                    .all(|(lk, lv)| k.iter().any(|(a, b)| a == lk && b == lv))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, fam) in self.lock_counters().iter() {
            let _ = writeln!(
                out,
                "# HELP {name} [ALPHA] {}\n# TYPE {name} {}",
                fam.help, fam.kind
            );
            for (labels, v) in &fam.series {
                let _ = writeln!(out, "{name}{} {v}", render_labels(labels, None));
            }
        }
        for (name, fam) in self.lock_histograms().iter() {
            let _ = writeln!(
                out,
                "# HELP {name} [ALPHA] {}\n# TYPE {name} histogram",
                fam.help
            );
            for (labels, h) in &fam.series {
                for (b, count) in fam.bounds.iter().zip(&h.buckets) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {count}",
                        render_labels(labels, Some(&b.to_string()))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    render_labels(labels, None),
                    h.count
                );
            }
        }
        out
    }
}

fn render_labels(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc(
            "apiserver_request_total",
            "Requests.",
            vec![("verb", "GET".into()), ("code", "200".into())],
        );
        m.inc(
            "apiserver_request_total",
            "Requests.",
            vec![("verb", "GET".into()), ("code", "200".into())],
        );
        m.observe(
            "x_seconds",
            "X.",
            transformation_buckets,
            vec![],
            Duration::from_micros(7),
        );
        let text = m.render();
        assert!(
            text.contains("apiserver_request_total{verb=\"GET\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.000005\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.00001\"} 1"),
            "{text}"
        );
        assert!(text.contains("x_seconds_count 1"));
        assert_eq!(
            m.counter_value("apiserver_request_total", &[("verb", "GET")]),
            2.0
        );
    }
}

/// `"sha256:" + hex(SHA-256(value))`, empty for empty input: upstream's hash labels.
pub fn hash_label(value: &str) -> String {
    use sha2::{Digest, Sha256};
    if value.is_empty() {
        return String::new();
    }
    let d = Sha256::digest(value.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Upstream's KMS plugin latency buckets: 0.1 ms × 2^n, 20 buckets.
pub fn kms_latency_buckets() -> Vec<f64> {
    (0..20).map(|i| 1e-4 * 2f64.powi(i)).collect()
}

/// The KMS v2 providers' events as upstream's envelope metrics.
#[derive(Debug)]
pub struct KmsMetrics {
    metrics: std::sync::Arc<Metrics>,
    apiserver_id_hash: String,
    /// Key id → its hash label, so a write does not hash its key id again.
    hashes: Mutex<std::collections::HashMap<String, String>>,
}

impl KmsMetrics {
    pub fn new(metrics: std::sync::Arc<Metrics>, server_id: &str) -> Self {
        KmsMetrics {
            metrics,
            apiserver_id_hash: hash_label(server_id),
            hashes: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn key_id_hash(&self, key_id: &str) -> String {
        // Each access is one map operation: a poisoned lock still holds consistent data.
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hashes.get(key_id) {
            return h.clone();
        }
        if hashes.len() >= 100 {
            hashes.clear();
        }
        let h = hash_label(key_id);
        hashes.insert(key_id.to_string(), h.clone());
        h
    }
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl atrest_encryption::kms::KmsObserver for KmsMetrics {
    fn key_id_used(&self, provider: &str, transformation_type: &'static str, key_id: &str) {
        let labels = vec![
            ("transformation_type", transformation_type.to_string()),
            ("provider_name", provider.to_string()),
            ("key_id_hash", self.key_id_hash(key_id)),
            ("apiserver_id_hash", self.apiserver_id_hash.clone()),
        ];
        self.metrics.inc(
            "apiserver_envelope_encryption_key_id_hash_total",
            "Number of times a keyID is used split by transformation type, provider, and apiserver identity.",
            labels.clone(),
        );
        self.metrics.set_gauge(
            "apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds",
            "The last time in seconds when a keyID was used.",
            labels,
            unix_seconds(),
        );
    }

    fn status_key_id(&self, provider: &str, key_id: &str) {
        self.metrics.set_gauge(
            "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds",
            "The last time in seconds when a keyID was returned by the Status RPC call.",
            vec![
                ("provider_name", provider.to_string()),
                ("key_id_hash", self.key_id_hash(key_id)),
                ("apiserver_id_hash", self.apiserver_id_hash.clone()),
            ],
            unix_seconds(),
        );
    }

    fn invalid_status_key_id(&self, provider: &str, error: &'static str) {
        self.metrics.inc(
            "apiserver_envelope_encryption_invalid_key_id_from_status_total",
            "Number of times an invalid keyID is returned by the Status RPC call split by error.",
            vec![
                ("provider_name", provider.to_string()),
                ("error", error.to_string()),
            ],
        );
    }

    fn dek_source_cache_size(&self, provider: &str, size: usize) {
        self.metrics.set_gauge(
            "apiserver_envelope_encryption_dek_source_cache_size",
            "Number of records in data encryption key (DEK) source cache. On a restart, this value is an approximation of the number of decrypt RPC calls the server will make to the KMS plugin.",
            vec![("provider_name", provider.to_string())],
            size as f64,
        );
    }

    fn cache_miss(&self) {
        self.metrics.inc(
            "apiserver_storage_envelope_transformation_cache_misses_total",
            "Total number of cache misses while accessing key decryption key(KEK).",
            Vec::new(),
        );
    }

    fn plugin_call(
        &self,
        provider: &str,
        method: &'static str,
        grpc_code: &str,
        elapsed: Duration,
    ) {
        self.metrics.observe(
            "apiserver_envelope_encryption_kms_operations_latency_seconds",
            "KMS operation duration with gRPC error code status total.",
            kms_latency_buckets,
            vec![
                ("provider_name", provider.to_string()),
                ("method_name", method.to_string()),
                ("grpc_status_code", grpc_code.to_string()),
            ],
            elapsed,
        );
    }
}

#[cfg(test)]
mod kms_tests {
    use super::*;
    use atrest_encryption::kms::KmsObserver;

    #[test]
    fn key_id_hashes_are_upstreams() {
        assert_eq!(
            hash_label("1"),
            "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
        );
        assert_eq!(hash_label(""), "");
        let metrics = std::sync::Arc::new(Metrics::default());
        let kms = KmsMetrics::new(metrics.clone(), "server-a");
        kms.key_id_used("p", "to_storage", "1");
        kms.key_id_used("p", "to_storage", "1");
        kms.invalid_status_key_id("p", "empty");
        kms.cache_miss();
        assert_eq!(
            metrics.counter_value(
                "apiserver_envelope_encryption_key_id_hash_total",
                &[
                    ("transformation_type", "to_storage"),
                    ("provider_name", "p"),
                    (
                        "key_id_hash",
                        "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
                    ),
                    ("apiserver_id_hash", &hash_label("server-a")),
                ]
            ),
            2.0
        );
        assert_eq!(
            metrics.counter_value(
                "apiserver_envelope_encryption_invalid_key_id_from_status_total",
                &[("error", "empty")]
            ),
            1.0
        );
        let text = metrics.render();
        assert!(text.contains("apiserver_storage_envelope_transformation_cache_misses_total 1"));
    }
}
