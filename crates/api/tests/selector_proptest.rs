//! Property tests of the label and field selector parsers, which read client input: no
//! input panics, and printing a parsed selector parses back to the same selector.
#![allow(clippy::unwrap_used)]

use atrest_api::kind::Kind;
use atrest_api::selector::{parse_field_selector, parse_label_selector, FieldSelector};
use proptest::prelude::*;

const KINDS: [Kind; 6] = [
    Kind::SECRET,
    Kind::CONFIG_MAP,
    Kind::NAMESPACE,
    Kind::CUSTOM_RESOURCE_DEFINITION,
    Kind::NAMESPACED_CUSTOM,
    Kind::CLUSTER_CUSTOM,
];

fn sorted(mut s: FieldSelector) -> FieldSelector {
    s.requirements.sort();
    s
}

/// Characters that matter to the lexers, so random strings hit their branches.
fn selector_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'e'),
            1 => proptest::sample::select(vec![
                '=', '!', '(', ')', ',', '<', '>', ' ', '\\', '/', '.', '-', '_', '0', '9', 'é', '\t',
            ]),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,6}",
        "[a-z]{1,4}\\.example/[a-z][a-z0-9_.-]{0,5}[a-z0-9]",
    ]
}

fn value() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9_.-]{0,6}[a-z0-9])?"
}

/// A valid label selector requirement, as text.
fn requirement() -> impl Strategy<Value = String> {
    (
        key(),
        0..8u8,
        proptest::collection::vec(value(), 1..4),
        0i64..99,
    )
        .prop_map(|(k, op, values, n)| match op {
            // An equality may compare with the empty value.
            0 => format!("{k}={}", if n % 3 == 0 { "" } else { values[0].as_str() }),
            1 => format!("{k}=={}", values[0]),
            2 => format!("{k}!={}", values[0]),
            3 => format!("{k} in ({})", values.join(",")),
            4 => format!("{k} notin ({})", values.join(", ")),
            5 => k,
            6 => format!("!{k}"),
            _ => format!("{k}{}{n}", if n % 2 == 0 { ">" } else { "<" }),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn label_selectors_never_panic_and_reprint(text in selector_text()) {
        if let Ok(selector) = parse_label_selector(&text) {
            let printed = selector.to_string();
            prop_assert_eq!(parse_label_selector(&printed).unwrap(), selector);
        }
    }

    #[test]
    fn valid_label_selectors_parse_and_round_trip(
        parts in proptest::collection::vec(requirement(), 0..5)
    ) {
        let text = parts.join(",");
        let selector = parse_label_selector(&text).unwrap();
        prop_assert_eq!(selector.requirements.len(), parts.len());
        let printed = selector.to_string();
        prop_assert_eq!(parse_label_selector(&printed).unwrap(), selector.clone());
        // Printing is canonical: a second round prints the same text.
        prop_assert_eq!(parse_label_selector(&printed).unwrap().to_string(), printed);
    }

    #[test]
    fn field_selectors_never_panic_and_reprint(text in selector_text(), k in 0..KINDS.len()) {
        // Random text rarely names a real field; prefix one so the value paths run too.
        for candidate in [text.clone(), format!("metadata.name={text}"), format!("type!={text}")] {
            if let Ok(selector) = parse_field_selector(&candidate, KINDS[k]) {
                let printed = selector.to_string();
                let again = parse_field_selector(&printed, KINDS[k]).unwrap();
                prop_assert_eq!(sorted(again), sorted(selector));
            }
        }
    }

    #[test]
    fn field_values_with_escapes_round_trip(
        values in proptest::collection::vec("[a-c=,\\\\!]{0,6}", 1..4),
        negated in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let terms: Vec<String> = values
            .iter()
            .zip(&negated)
            .map(|(v, neg)| {
                let escaped: String = v
                    .chars()
                    .flat_map(|c| {
                        let escape = matches!(c, '\\' | ',' | '=').then_some('\\');
                        escape.into_iter().chain([c])
                    })
                    .collect();
                format!("metadata.name{}{escaped}", if *neg { "!=" } else { "=" })
            })
            .collect();
        let selector = parse_field_selector(&terms.join(","), Kind::SECRET).unwrap();
        let mut got: Vec<(bool, String)> = selector
            .requirements
            .iter()
            .map(|r| (r.negated, r.value.clone()))
            .collect();
        let mut want: Vec<(bool, String)> =
            negated.iter().copied().zip(values.iter().cloned()).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
        let again = parse_field_selector(&selector.to_string(), Kind::SECRET).unwrap();
        prop_assert_eq!(sorted(again), sorted(selector));
    }
}

#[test]
fn printers_match_upstreams_string_form() {
    let s = parse_label_selector("b in (y,x), a==1,!c,d,e>3").unwrap();
    assert_eq!(s.to_string(), "b in (x,y),a=1,!c,d,e>3");
    let f = parse_field_selector("type!=a\\,b,metadata.name=x\\=y", Kind::SECRET).unwrap();
    assert_eq!(f.to_string(), "metadata.name=x\\=y,type!=a\\,b");
}
