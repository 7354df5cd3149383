//! A fresh configuration file for `atrest config init`.

use zeroize::Zeroizing;

use crate::key::Key;

/// What the new file's write provider is.
#[derive(Debug)]
pub enum TemplateProvider<'a> {
    /// `aescbc`, `aesgcm` or `secretbox`, with its first key.
    Static {
        kind: &'a str,
        key_name: &'a str,
        key: &'a Key,
    },
    /// A KMS v2 plugin.
    KmsV2 { name: &'a str, endpoint: &'a str },
}

/// Renders an `EncryptionConfiguration` whose single rule covers `resources` with `provider`,
/// followed by `identity: {}` when `identity_fallback` (so data written before encryption was
/// enabled stays readable until it is rewritten). The text holds key material: it is returned
/// in a buffer that is wiped on drop.
pub fn render(
    resources: &[String],
    provider: &TemplateProvider<'_>,
    identity_fallback: bool,
) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    out.push_str("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n");
    for r in resources {
        out.push_str(&format!("      - {}\n", yaml_scalar(r)));
    }
    out.push_str("    providers:\n");
    match provider {
        TemplateProvider::Static {
            kind,
            key_name,
            key,
        } => {
            out.push_str(&format!(
                "      - {kind}:\n          keys:\n            - name: {}\n",
                yaml_scalar(key_name)
            ));
            out.push_str("              secret: ");
            out.push_str(&key.to_base64());
            out.push('\n');
        }
        TemplateProvider::KmsV2 { name, endpoint } => {
            out.push_str(&format!(
                "      - kms:\n          apiVersion: v2\n          name: {}\n          endpoint: {}\n          timeout: 3s\n",
                yaml_scalar(name),
                yaml_scalar(endpoint)
            ));
        }
    }
    if identity_fallback {
        out.push_str("      # Reads data stored before encryption was enabled; rewrite it (atrest reencrypt)\n");
        out.push_str("      # and then remove this line.\n");
        out.push_str("      - identity: {}\n");
    }
    out
}

/// Quotes a scalar when plain YAML would misread it (`*.` starts with an alias indicator).
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}
