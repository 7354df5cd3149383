//! Encrypt and decrypt through the full provider path (prefix, key lookup, nonce generation,
//! allocation) for every provider, at 1 KiB and 64 KiB, and, in the same process, the raw
//! native primitives the providers are built on (`baseline/...`: ring's AES-GCM and
//! libsodium's secretbox, in place on a preallocated buffer, fixed nonce). BENCHMARKS.md puts
//! these figures beside `openssl speed` and a C libsodium program run at the same time
//! (`bench/crypto/compare.sh`).

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use atrest_encryption::kms::NoKmsConnector;
use atrest_encryption::{EncryptionConfig, GroupResource, ParseOptions, ProviderChain};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

const K32: &str = "er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=";
const K24: &str = "yNvS9OLwvYPPIYTHjzRt8w573l2RjTPw";
const K16: &str = "c2VjcmV0IGlzIHNlY3VyZQ==";
const STORAGE_KEY: &[u8] = b"/registry/secrets/bench/value";

/// Static providers never wait, so one poll completes the future; this keeps executor
/// overhead out of the figures (a server awaits these inside its own runtime).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("static providers complete without waiting"),
    }
}

fn chain(kind: &str, secret: &str) -> ProviderChain {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{{{kind}: {{keys: [{{name: k1, secret: '{secret}'}}]}}}}]\n"
    );
    let config =
        EncryptionConfig::parse(text.as_bytes(), "bench", ParseOptions::default()).expect("valid");
    ProviderChain::build(&config, &NoKmsConnector).expect("builds")
}

fn group_for<'a>(
    c: &'a mut Criterion,
    name: &str,
    size: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(format!("{name}/{}KiB", size / 1024));
    group.throughput(Throughput::Bytes(size as u64));
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group
}

fn providers(c: &mut Criterion) {
    let secrets = GroupResource::new("", "secrets");
    let cases = [
        ("aesgcm-256", "aesgcm", K32),
        ("aesgcm-192", "aesgcm", K24),
        ("aesgcm-128", "aesgcm", K16),
        ("aescbc-256", "aescbc", K32),
        ("secretbox", "secretbox", K32),
    ];
    for size in [1024usize, 64 * 1024] {
        let payload = vec![0x5au8; size];
        let mut group = group_for(c, "provider", size);
        for (label, kind, secret) in cases {
            let chain = chain(kind, secret);
            let t = chain.for_resource(&secrets);
            group.bench_function(BenchmarkId::new("encrypt", label), |b| {
                b.iter(|| now(t.encrypt(&payload, STORAGE_KEY)).expect("encrypts"))
            });
            let stored = now(t.encrypt(&payload, STORAGE_KEY))
                .expect("encrypts")
                .stored;
            group.bench_function(BenchmarkId::new("decrypt", label), |b| {
                b.iter(|| now(t.decrypt(&stored, STORAGE_KEY)).expect("decrypts"))
            });
        }
        group.finish();
    }
}

fn baseline(c: &mut Criterion) {
    let key32 = [0x42u8; 32];
    for size in [1024usize, 64 * 1024] {
        let mut group = group_for(c, "baseline", size);
        for (label, alg, key) in [
            ("ring-aes-256-gcm", &AES_256_GCM, &key32[..]),
            ("ring-aes-128-gcm", &AES_128_GCM, &key32[..16]),
        ] {
            let key = LessSafeKey::new(UnboundKey::new(alg, key).expect("key"));
            let nonce = [7u8; 12];
            let mut buf = vec![0x5au8; size];
            group.bench_function(BenchmarkId::new("encrypt", label), |b| {
                b.iter(|| {
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(STORAGE_KEY),
                        &mut buf,
                    )
                    .expect("seals")
                })
            });
            let mut sealed = vec![0x5au8; size];
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(STORAGE_KEY),
                    &mut sealed,
                )
                .expect("seals");
            sealed.extend_from_slice(tag.as_ref());
            group.bench_function(BenchmarkId::new("decrypt", label), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| {
                        key.open_in_place(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(STORAGE_KEY),
                            buf,
                        )
                        .map(|p| p.len())
                        .expect("opens")
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        // ring with what any API returning a new buffer must add: one allocation and one copy
        // of the input (the floor for a provider that returns `Vec<u8>`).
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key32).expect("key"));
        let payload = vec![0x5au8; size];
        group.bench_function(BenchmarkId::new("encrypt", "ring-aes-256-gcm-vec"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(12 + size + 16);
                out.extend_from_slice(&[7u8; 12]);
                out.extend_from_slice(&payload);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([7u8; 12]),
                        Aad::from(STORAGE_KEY),
                        &mut out[12..],
                    )
                    .expect("seals");
                out.extend_from_slice(tag.as_ref());
                out
            })
        });
        let mut sealed = vec![0x5au8; size];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([7u8; 12]),
                Aad::from(STORAGE_KEY),
                &mut sealed,
            )
            .expect("seals");
        sealed.extend_from_slice(tag.as_ref());
        group.bench_function(BenchmarkId::new("decrypt", "ring-aes-256-gcm-vec"), |b| {
            b.iter(|| {
                let mut out = sealed.to_vec();
                let len = key
                    .open_in_place(
                        Nonce::assume_unique_for_key([7u8; 12]),
                        Aad::from(STORAGE_KEY),
                        &mut out,
                    )
                    .expect("opens")
                    .len();
                out.truncate(len);
                out
            })
        });
        let nonce = [7u8; atrest_ffi::secretbox::NONCE_LEN];
        let mut buf = vec![0x5au8; size];
        group.bench_function(BenchmarkId::new("encrypt", "libsodium-secretbox"), |b| {
            b.iter(|| {
                atrest_ffi::secretbox::seal_in_place(&key32, &nonce, &mut buf).expect("seals")
            })
        });
        let mut sealed = vec![0x5au8; size];
        let tag = atrest_ffi::secretbox::seal_in_place(&key32, &nonce, &mut sealed).expect("seals");
        group.bench_function(BenchmarkId::new("decrypt", "libsodium-secretbox"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    atrest_ffi::secretbox::open_in_place(&key32, &nonce, &tag, buf).expect("opens")
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, providers, baseline);
criterion_main!(benches);
