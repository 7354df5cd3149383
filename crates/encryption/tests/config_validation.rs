//! Every upstream validation rule, each with a failing example and its message checked.

#![allow(clippy::unwrap_used)]

use atrest_encryption::config::{KmsApiVersion, ProviderConfig};
use atrest_encryption::{ConfigError, EncryptionConfig, GroupResource, ParseOptions};

const K32: &str = "er+42Uj8deiLT9sUFFwycEqLPW+Egt0EDVTWPsF3MDM=";
const K16: &str = "c2VjcmV0IGlzIHNlY3VyZQ==";

fn parse_with(text: &str, options: ParseOptions) -> Result<EncryptionConfig, ConfigError> {
    EncryptionConfig::parse(text.as_bytes(), "enc.yaml", options)
}

fn parse(text: &str) -> Result<EncryptionConfig, ConfigError> {
    parse_with(text, ParseOptions::default())
}

fn doc(resources: &str) -> String {
    format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{resources}")
}

/// One rule whose resources are `res` and whose provider list is `providers` (YAML flow).
fn rule(res: &str, providers: &str) -> String {
    doc(&format!("- resources: {res}\n  providers: {providers}\n"))
}

fn errors_of(text: &str) -> Vec<String> {
    errors_with(text, ParseOptions::default())
}

fn errors_with(text: &str, options: ParseOptions) -> Vec<String> {
    match parse_with(text, options) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.field_errors(),
    }
}

#[track_caller]
fn assert_error(text: &str, expected: &str) {
    let errors = errors_of(text);
    assert!(
        errors.iter().any(|e| e == expected),
        "expected {expected:?}\n   in {errors:#?}"
    );
}

#[track_caller]
fn assert_error_contains(text: &str, path: &str, detail: &str) {
    let errors = errors_of(text);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(detail)),
        "expected {path}: ...{detail}\n   in {errors:#?}"
    );
}

#[test]
fn valid_configs_parse() {
    let c = parse(&rule(
        "[secrets]",
        &format!("[{{aescbc: {{keys: [{{name: key1, secret: '{K32}'}}]}}}}, {{identity: {{}}}}]"),
    ))
    .unwrap();
    assert_eq!(c.rules().len(), 1);
    assert_eq!(
        c.rules()[0].resources,
        vec![GroupResource::new("", "secrets")]
    );
    assert!(matches!(
        c.rules()[0].providers[0],
        ProviderConfig::AesCbc(_)
    ));
    assert!(matches!(
        c.rules()[0].providers[1],
        ProviderConfig::Identity
    ));
    // A 16-byte aescbc key is accepted (the validator uses the AES sizes).
    parse(&rule(
        "[secrets]",
        &format!("[{{aescbc: {{keys: [{{name: k, secret: '{K16}'}}]}}}}]"),
    ))
    .unwrap();
}

#[test]
fn legacy_kind_alias_and_json_are_accepted() {
    let legacy = format!(
        "kind: EncryptionConfig\napiVersion: v1\nresources:\n- resources: [secrets]\n  providers: [{{secretbox: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]\n"
    );
    parse(&legacy).unwrap();
    let json = format!(
        r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["secrets"],"providers":[{{"aesgcm":{{"keys":[{{"name":"k","secret":"{K32}"}}]}}}}]}}]}}"#
    );
    parse(&json).unwrap();
}

#[test]
fn config_hash_is_sha256_of_the_raw_bytes() {
    assert_eq!(
        atrest_encryption::config::config_hash(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let text = rule("[secrets]", "[{identity: {}}]");
    assert_eq!(
        parse(&text).unwrap().hash(),
        atrest_encryption::config::config_hash(text.as_bytes())
    );
}

#[test]
fn empty_file_wrong_type_unknown_and_duplicate_fields() {
    let e = parse("  \n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "encryption provider configuration file \"enc.yaml\" is empty"
    );

    let e = parse("apiVersion: v1\nkind: Secret\nresources: []\n").unwrap_err();
    assert!(e.to_string().contains("got unexpected config type"), "{e}");

    // A typo inside a kms block, as in upstream's strict-decoding test.
    let typo = rule(
        "[secrets]",
        "[{kms: {apiVersion: v2, name: foo, endpoint: 'unix:///tmp/kms.sock', pandas: 1}}]",
    );
    let e = parse(&typo).unwrap_err().to_string();
    assert!(
        e.contains("resources[0].providers[0].kms") && e.contains("unknown field `pandas`"),
        "{e}"
    );

    let dup_yaml =
        doc("- resources: [secrets]\n  resources: [configmaps]\n  providers: [{identity: {}}]\n");
    let e = parse(&dup_yaml).unwrap_err().to_string();
    assert!(e.to_lowercase().contains("duplicate"), "{e}");

    let dup_json = r#"{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","kind":"EncryptionConfiguration","resources":[]}"#;
    let e = parse(dup_json).unwrap_err().to_string();
    assert!(e.contains("duplicate field `kind`"), "{e}");

    let e = parse(&doc(
        "- resources: [secrets]\n  providers: [{identity: {}}]\n  metadata: {}\n",
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("resources[0].metadata: unknown field `metadata`"),
        "{e}"
    );
}

#[test]
fn resources_and_providers_are_required() {
    assert_error(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
        "resources: Required value: at least one resources is required",
    );
    assert_error(
        &rule("[]", "[{identity: {}}]"),
        "resources[0].resources: Required value: at least one resources[0].resources is required",
    );
    assert_error(
        &rule("[secrets]", "[]"),
        "resources[0].providers: Required value: at least one resources[0].providers is required",
    );
}

#[test]
fn resource_name_rules() {
    let id = "[{identity: {}}]";
    assert_error(&rule("[Secrets]", id), "resources[0].resources[0]: Invalid value: \"Secrets\": resource name should not contain capital letters");
    assert_error(&rule("['*']", id), "resources[0].resources[0]: Invalid value: \"*\": use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources");
    for r in [
        "apiserveripinfo",
        "serviceipallocations",
        "servicenodeportallocations",
    ] {
        assert_error(
            &rule(&format!("[{r}]"), id),
            &format!("resources[0].resources[0]: Invalid value: \"{r}\": resources which do not have REST API/s cannot be encrypted"),
        );
    }
    assert_error_contains(
        &rule("['*.events.k8s.io']", id),
        "resources[0].resources[0]",
        "Use 'events' instead in the config file",
    );
    assert_error_contains(
        &rule("[events.events.k8s.io]", id),
        "resources[0].resources[0]",
        "stored using the 'events' API group",
    );
    assert_error(&rule("[deployments.extensions]", id), "resources[0].resources[0]: Invalid value: \"deployments.extensions\": 'extensions' group has been removed and cannot be used for encryption");
    assert_error(&rule("['secrets.*']", id), "resources[0].resources[0]: Invalid value: \"secrets.*\": encrypting the same resource across groups is not supported");
    // Core events and unknown resources are allowed.
    parse(&rule(
        "[events, 'pandas.awesome.bears.example', not-yet-a-crd]",
        id,
    ))
    .unwrap();
}

#[test]
fn overlap_and_duplicates_in_one_list() {
    let id = "[{identity: {}}]";
    assert_error(&rule("[secrets, secrets]", id), "resources[0].resources: Invalid value: []string{\"secrets\", \"secrets\"}: the same resource cannot be specified multiple times");
    let overlap = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
    assert_error(
        &rule("[secrets, '*.']", id),
        &format!(
            "resources[0].resources: Invalid value: []string{{\"secrets\", \"*.\"}}: {overlap}"
        ),
    );
    assert_error_contains(
        &rule("['deployments.apps', '*.apps']", id),
        "resources[0].resources",
        overlap,
    );
    assert_error_contains(
        &rule("['*.*', configmaps]", id),
        "resources[0].resources",
        overlap,
    );
    // Different groups do not overlap.
    parse(&rule("['*.apps', secrets]", id)).unwrap();
}

#[test]
fn masking_across_entries() {
    let id = "{identity: {}}";
    let masked = doc(&format!(
        "- resources: ['*.']\n  providers: [{id}]\n- resources: [secrets]\n  providers: [{id}]\n"
    ));
    assert_error(&masked, "resources[1].resources[0]: Invalid value: \"secrets\": resource \"secrets\" is masked by earlier rule \"*.\"");
    let masked = doc(&format!("- resources: ['*.*']\n  providers: [{id}]\n- resources: ['deployments.apps']\n  providers: [{id}]\n"));
    assert_error_contains(
        &masked,
        "resources[1].resources[0]",
        "is masked by earlier rule \"*.*\"",
    );
    let twice = doc(&format!("- resources: ['*.apps']\n  providers: [{id}]\n- resources: ['*.apps']\n  providers: [{id}]\n"));
    assert_error_contains(
        &twice,
        "resources[1].resources[0]",
        "is masked by earlier rule \"*.apps\"",
    );
    // Explicit first, wildcard after: allowed.
    parse(&doc(&format!("- resources: [secrets]\n  providers: [{id}]\n- resources: ['*.']\n  providers: [{id}]\n- resources: ['*.*']\n  providers: [{id}]\n"))).unwrap();
}

#[test]
fn provider_element_must_have_exactly_one_provider() {
    assert_error(&rule("[secrets]", "[{}]"), "resources[0].providers[0]: Invalid value: {}: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity");
    // `identity: null` is not set, as in Go.
    assert_error_contains(
        &rule("[secrets]", "[{identity: null}]"),
        "resources[0].providers[0]",
        "provider does not contain any of the expected providers",
    );
    assert_error_contains(
        &rule("[secrets]", &format!("[{{identity: {{}}, secretbox: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]")),
        "resources[0].providers[0]",
        "more than one provider specified in a single element, should split into different list elements",
    );
}

#[test]
fn key_rules() {
    assert_error(
        &rule("[secrets]", "[{aescbc: {keys: []}}]"),
        "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required",
    );
    assert_error(
        &rule("[secrets]", &format!("[{{aesgcm: {{keys: [{{secret: '{K32}'}}]}}}}]")),
        "resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key",
    );
    assert_error(&rule("[secrets]", "[{secretbox: {keys: [{name: a}]}}]"), "resources[0].providers[0].secretbox.keys[0].secret: Required value: secret is a mandatory field for a key");
    assert_error(
        &rule("[secrets]", "[{identity: {}}, {aescbc: {keys: [{name: a, secret: 'not base64!'}]}}]"),
        "resources[0].providers[1].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded",
    );
    // The documentation's example keys are 28 and 25 bytes: rejected.
    assert_error(
        &rule("[secrets]", "[{aescbc: {keys: [{name: key1, secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==}]}}]"),
        "resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 28, expected one of [16 24 32]",
    );
    assert_error(
        &rule("[secrets]", &format!("[{{secretbox: {{keys: [{{name: a, secret: '{K16}'}}]}}}}]")),
        "resources[0].providers[0].secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32]",
    );
    // Duplicate names and names with ':' are not rejected.
    parse(&rule("[secrets]", &format!("[{{aesgcm: {{keys: [{{name: 'a:b', secret: '{K32}'}}, {{name: 'a:b', secret: '{K16}'}}]}}}}]"))).unwrap();
}

#[test]
fn secrets_never_appear_in_errors() {
    let secret_like = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==";
    for text in [
        rule("[secrets]", &format!("[{{aescbc: {{keys: [{{name: a, secret: '{secret_like}'}}]}}}}]")),
        rule("[secrets]", &format!("[{{aescbc: {{keys: [{{name: a, secret: '{secret_like}', extra: 1}}]}}}}]")),
        doc(&format!("- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: a\n        secret: {secret_like}\n        secret: {secret_like}\n")),
    ] {
        let e = parse(&text).unwrap_err();
        assert!(!e.to_string().contains(secret_like), "secret leaked: {e}");
        assert!(!format!("{e:?}").contains(secret_like), "secret leaked in Debug: {e:?}");
    }
}

fn kms(fields: &str) -> String {
    rule("[secrets]", &format!("[{{kms: {{{fields}}}}}]"))
}

#[test]
fn kms_defaults() {
    let gate = ParseOptions {
        allow_kms_v1: true,
        ..Default::default()
    };
    let c = parse_with(&kms("name: a, endpoint: 'unix:///var/run/kms.sock'"), gate).unwrap();
    let k = c.kms_providers().next().unwrap();
    // No apiVersion means KMS v1, with the default cache size and timeout.
    assert_eq!(k.api_version, KmsApiVersion::V1 { cache_size: 1000 });
    assert_eq!(k.timeout, std::time::Duration::from_secs(3));
    assert_eq!(k.endpoint.socket, "/var/run/kms.sock");
    let c = parse(&kms(
        "apiVersion: v2, name: a, endpoint: 'unix:///@kms-provider.sock', timeout: 1m30s",
    ))
    .unwrap();
    let k = c.kms_providers().next().unwrap();
    assert_eq!(k.api_version, KmsApiVersion::V2);
    assert_eq!(k.endpoint.socket, "@kms-provider.sock");
    assert_eq!(k.timeout, std::time::Duration::from_secs(90));
}

#[test]
fn kms_v1_needs_the_feature_gate() {
    let text = kms("name: a, endpoint: 'unix:///tmp/k.sock'");
    let e = parse(&text).unwrap_err();
    assert!(
        e.to_string().contains("KMSv1 is deprecated")
            && e.to_string().contains("resources[0].providers[0].kms"),
        "{e}"
    );
    parse_with(
        &text,
        ParseOptions {
            allow_kms_v1: true,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn kms_rules() {
    let v2 = "apiVersion: v2";
    let ep = "endpoint: 'unix:///tmp/k.sock'";
    assert_error(&kms(&format!("{v2}, {ep}")), "resources[0].providers[0].kms.name: Required value: name is a mandatory field for a provider");
    assert_error(&kms(&format!("{v2}, name: 'a:b', {ep}")), "resources[0].providers[0].kms.name: Invalid value: \"a:b\": invalid KMS provider name a:b, must not contain ':'");
    assert_error(&kms(&format!("{v2}, name: a, {ep}, timeout: 0s")), "resources[0].providers[0].kms.timeout: Invalid value: \"0s\": timeout should be a positive value");
    assert_error_contains(
        &kms(&format!("{v2}, name: a, {ep}, timeout: -1s")),
        "resources[0].providers[0].kms.timeout",
        "timeout should be a positive value",
    );
    assert_error_contains(
        &kms(&format!("{v2}, name: a, {ep}, timeout: soon")),
        "resources[0].providers[0].kms.timeout",
        "invalid duration",
    );
    assert_error(&kms(&format!("{v2}, name: a")), "resources[0].providers[0].kms.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms");
    assert_error(&kms(&format!("{v2}, name: a, endpoint: 'tcp://localhost:80'")), "resources[0].providers[0].kms.endpoint: Invalid value: \"tcp://localhost:80\": unsupported scheme \"tcp\" for KMS provider, only unix is supported");
    assert_error_contains(
        &kms(&format!("{v2}, name: a, endpoint: ':nope'")),
        "resources[0].providers[0].kms.endpoint",
        "invalid endpoint for kms provider, error:",
    );
    assert_error(&kms(&format!("{v2}, name: a, {ep}, cachesize: 10")), "resources[0].providers[0].kms.cachesize: Invalid value: 10: cachesize is not supported in v2");
    let gate = ParseOptions {
        allow_kms_v1: true,
        ..Default::default()
    };
    let errs = errors_with(
        &kms(&format!("apiVersion: v1, name: a, {ep}, cachesize: 0")),
        gate,
    );
    assert!(errs.contains(&"resources[0].providers[0].kms.cachesize: Invalid value: 0: cachesize should be a positive value, or negative to disable".to_string()), "{errs:?}");
    assert_error(&kms(&format!("apiVersion: v3, name: a, {ep}")), "resources[0].providers[0].kms.apiVersion: Invalid value: \"v3\": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported");
}

#[test]
fn kms_names_must_be_unique() {
    let ep = "endpoint: 'unix:///tmp/k.sock'";
    let two = |a: &str, b: &str| {
        rule(
            "[secrets]",
            &format!("[{{kms: {{{a}, name: same, {ep}}}}}, {{kms: {{{b}, name: same, {ep}}}}}]"),
        )
    };
    let gate = ParseOptions {
        allow_kms_v1: true,
        ..Default::default()
    };
    let dup = "resources[0].providers[1].kms.name: Invalid value: \"same\": duplicate KMS provider name same, names must be unique";
    assert!(errors_with(&two("apiVersion: v2", "apiVersion: v2"), gate).contains(&dup.to_string()));
    assert!(errors_with(&two("apiVersion: v1", "apiVersion: v2"), gate).contains(&dup.to_string()));
    // A v1 name may repeat, unless automatic reload is on.
    parse_with(&two("apiVersion: v1", "apiVersion: v1"), gate).unwrap();
    let reload = ParseOptions {
        allow_kms_v1: true,
        reload: true,
    };
    assert!(
        errors_with(&two("apiVersion: v1", "apiVersion: v1"), reload).contains(&dup.to_string())
    );
    // v1 names may contain ':'.
    parse_with(&kms(&format!("apiVersion: v1, name: 'a:b', {ep}")), gate).unwrap();
}

#[test]
fn all_errors_are_reported_together() {
    let text = doc(&format!(
        "- resources: [Secrets]\n  providers: [{{aescbc: {{keys: [{{name: a, secret: bad}}]}}}}]\n- resources: []\n  providers: [{{secretbox: {{keys: [{{name: b, secret: '{K16}'}}]}}}}]\n"
    ));
    let errs = errors_of(&text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn lookup_order_exact_then_group_then_any() {
    let c = parse(&doc(&format!(
        "- resources: [secrets]\n  providers: [{{aesgcm: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]\n- resources: ['*.apps']\n  providers: [{{aescbc: {{keys: [{{name: b, secret: '{K32}'}}]}}}}]\n- resources: [secrets]\n  providers: [{{identity: {{}}}}]\n- resources: ['*.*']\n  providers: [{{secretbox: {{keys: [{{name: c, secret: '{K32}'}}]}}}}]\n"
    )))
    .unwrap();
    let kinds = |gr: GroupResource| {
        c.providers_for(&gr)
            .iter()
            .map(|p| p.kind_name())
            .collect::<Vec<_>>()
    };
    // An explicit resource in two entries reads with both lists (upstream appends).
    assert_eq!(
        kinds(GroupResource::new("", "secrets")),
        ["aesgcm", "identity"]
    );
    assert_eq!(kinds(GroupResource::new("apps", "deployments")), ["aescbc"]);
    assert_eq!(kinds(GroupResource::new("", "configmaps")), ["secretbox"]);
}

#[test]
fn lint_warns_about_weak_choices() {
    let w = |text: &str| {
        atrest_encryption::config::lint(&parse(text).unwrap())
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
    };
    let cbc = w(&rule(
        "[secrets]",
        &format!("[{{aescbc: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]"),
    ));
    assert!(
        cbc.iter()
            .any(|m| m.starts_with("resources[0].providers[0]: aescbc is not recommended")),
        "{cbc:?}"
    );
    let id = w(&rule("[secrets, configmaps]", "[{identity: {}}]"));
    assert!(
        id.iter()
            .any(|m| m.contains("new writes of secrets, configmaps are stored unencrypted")),
        "{id:?}"
    );
    let none = w(&rule(
        "[configmaps]",
        &format!("[{{secretbox: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]"),
    ));
    assert_eq!(
        none,
        vec!["resources: no rule covers secrets: they are stored in plaintext".to_string()]
    );
    let good = w(&rule(
        "['*.*']",
        &format!("[{{secretbox: {{keys: [{{name: a, secret: '{K32}'}}]}}}}]"),
    ));
    assert!(good.is_empty(), "{good:?}");
}

#[test]
fn rendered_templates_parse_back() {
    use atrest_encryption::config::template::{render, TemplateProvider};
    let key = atrest_encryption::Key::generate(32).unwrap();
    for kind in ["secretbox", "aesgcm", "aescbc"] {
        let text = render(
            &[
                "secrets".into(),
                "*.apps".into(),
                "pandas.awesome.bears.example".into(),
            ],
            &TemplateProvider::Static {
                kind,
                key_name: "key1",
                key: &key,
            },
            true,
        );
        let c = parse(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(c.rules()[0].providers.len(), 2);
    }
    let text = render(
        &["secrets".into()],
        &TemplateProvider::KmsV2 {
            name: "vault",
            endpoint: "unix:///run/kms.sock",
        },
        false,
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.kms_providers().next().unwrap().name, "vault");
}
