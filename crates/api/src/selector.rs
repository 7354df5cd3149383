//! Label selectors (`?labelSelector=`, `kubectl -l`) and field selectors
//! (`?fieldSelector=`, `--field-selector`) with upstream's syntax, checks and
//! error messages (`k8s.io/apimachinery/pkg/labels`, `.../fields`).
//!
//! Label selector syntax: comma-separated requirements `k=v`, `k==v`,
//! `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, and the integer
//! comparisons `k>1`, `k<1`. Keys must be qualified names and values label
//! values (see [`crate::validation`]). The empty selector matches everything.
//!
//! Field selectors: comma-separated `f=v`, `f==v`, `f!=v` with `\,`, `\=`,
//! `\\` escapes, over the fields each kind selects ([`Kind::selects_field`]):
//! `metadata.name`, `metadata.namespace` for namespaced kinds, `type` for
//! secrets, `status.phase` for namespaces.
//!
//! # Not supported
//!
//! - `spec.selectableFields` of CRDs (custom resources select by
//!   `metadata.name` / `metadata.namespace` only).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::kind::Kind;
use crate::validation::{is_qualified_name, is_valid_label_value};

/// A label selector requirement operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOperator {
    /// `k=v` or `k==v`.
    Equals,
    /// `k!=v`.
    NotEquals,
    /// `k in (a,b)`.
    In,
    /// `k notin (a,b)`.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>n` (integers).
    GreaterThan,
    /// `k<n` (integers).
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: LabelOperator,
    /// The values, sorted and deduplicated (as upstream's `sets.String`).
    pub values: Vec<String>,
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// The requirements, in the order given.
    pub requirements: Vec<LabelRequirement>,
}

/// A selector that does not parse, or names an unsupported field. The
/// message is upstream's (the server answers 400 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SelectorError {
    /// Upstream-shaped message, e.g. `unable to parse requirement: ...`.
    pub message: String,
}

impl SelectorError {
    fn new(message: impl Into<String>) -> SelectorError {
        SelectorError {
            message: message.into(),
        }
    }
}

/// Anything a selector can be matched against: a label map as JSON or Rust.
pub trait Labels {
    /// The value of label `key`, if set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelSelector {
    /// Whether the selector is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement (a
    /// missing label map counts as empty).
    pub fn matches_object(&self, object: &Value) -> bool {
        match object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
        {
            Some(labels) => matches(self, labels),
            None => matches(self, &Map::new()),
        }
    }
}

/// The selector in upstream's `String()` form (`a=b,c in (d,e),!f`), which parses back to
/// the same selector.
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, r) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            let first = r.values.first().map_or("", String::as_str);
            match r.operator {
                LabelOperator::Equals => write!(f, "{}={first}", r.key)?,
                LabelOperator::NotEquals => write!(f, "{}!={first}", r.key)?,
                LabelOperator::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                LabelOperator::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                LabelOperator::Exists => f.write_str(&r.key)?,
                LabelOperator::DoesNotExist => write!(f, "!{}", r.key)?,
                LabelOperator::GreaterThan => write!(f, "{}>{first}", r.key)?,
                LabelOperator::LessThan => write!(f, "{}<{first}", r.key)?,
            }
        }
        Ok(())
    }
}

/// Whether `labels` satisfy every requirement of `selector`.
pub fn matches<L: Labels + ?Sized>(selector: &LabelSelector, labels: &L) -> bool {
    selector
        .requirements
        .iter()
        .all(|requirement| requirement_matches(requirement, labels))
}

fn requirement_matches<L: Labels + ?Sized>(requirement: &LabelRequirement, labels: &L) -> bool {
    let value = labels.label(&requirement.key);
    let listed = |value: &str| requirement.values.iter().any(|listed| listed == value);
    match requirement.operator {
        LabelOperator::Equals | LabelOperator::In => value.is_some_and(listed),
        LabelOperator::NotEquals | LabelOperator::NotIn => !value.is_some_and(listed),
        LabelOperator::Exists => value.is_some(),
        LabelOperator::DoesNotExist => value.is_none(),
        LabelOperator::GreaterThan | LabelOperator::LessThan => {
            let (Some(actual), Some(bound)) = (
                value.and_then(|text| text.parse::<i64>().ok()),
                requirement
                    .values
                    .first()
                    .and_then(|text| text.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if requirement.operator == LabelOperator::GreaterThan {
                actual > bound
            } else {
                actual < bound
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Label selector lexer and parser (labels.Parse)

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    DoesNotExist,
    OpenParenthesis,
    CloseParenthesis,
    Comma,
    GreaterThan,
    LessThan,
    EndOfString,
    Error(String),
}

impl Token {
    /// The literal upstream quotes in messages.
    fn literal(&self) -> String {
        match self {
            Token::Identifier(text) | Token::Error(text) => text.clone(),
            Token::In => "in".to_owned(),
            Token::NotIn => "notin".to_owned(),
            Token::Equals => "=".to_owned(),
            Token::DoubleEquals => "==".to_owned(),
            Token::NotEquals => "!=".to_owned(),
            Token::DoesNotExist => "!".to_owned(),
            Token::OpenParenthesis => "(".to_owned(),
            Token::CloseParenthesis => ")".to_owned(),
            Token::Comma => ",".to_owned(),
            Token::GreaterThan => ">".to_owned(),
            Token::LessThan => "<".to_owned(),
            Token::EndOfString => String::new(),
        }
    }

    /// In value position `in` / `notin` are plain identifiers.
    fn as_value(&self) -> Token {
        match self {
            Token::In | Token::NotIn => Token::Identifier(self.literal()),
            other => other.clone(),
        }
    }
}

const SPECIAL_SYMBOLS: [&str; 9] = ["!", "!=", "(", ")", ",", "=", "==", ">", "<"];

/// Upstream's lexer skips only these.
fn is_selector_whitespace(character: char) -> bool {
    matches!(character, ' ' | '\t' | '\r' | '\n')
}

fn is_special(character: char) -> bool {
    matches!(character, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(selector: &str) -> Vec<Token> {
    let characters: Vec<char> = selector.chars().collect();
    let mut tokens = Vec::new();
    let mut position = 0;
    loop {
        while position < characters.len() && is_selector_whitespace(characters[position]) {
            position += 1;
        }
        if position >= characters.len() {
            tokens.push(Token::EndOfString);
            return tokens;
        }
        if is_special(characters[position]) {
            // Longest special symbol, as upstream's scanSpecialSymbol.
            let mut buffer = String::new();
            let mut last_match: Option<String> = None;
            while position < characters.len() && is_special(characters[position]) {
                buffer.push(characters[position]);
                if SPECIAL_SYMBOLS.contains(&buffer.as_str()) {
                    last_match = Some(buffer.clone());
                    position += 1;
                } else {
                    break;
                }
            }
            if last_match.is_none() {
                position += 1;
            }
            tokens.push(match last_match.as_deref() {
                Some("!") => Token::DoesNotExist,
                Some("!=") => Token::NotEquals,
                Some("(") => Token::OpenParenthesis,
                Some(")") => Token::CloseParenthesis,
                Some(",") => Token::Comma,
                Some("=") => Token::Equals,
                Some("==") => Token::DoubleEquals,
                Some(">") => Token::GreaterThan,
                Some("<") => Token::LessThan,
                // Unreachable in practice: every special character is a
                // symbol by itself.
                _ => Token::Error(format!("error expected: keyword found '{buffer}'")),
            });
        } else {
            let mut identifier = String::new();
            while position < characters.len()
                && !is_selector_whitespace(characters[position])
                && !is_special(characters[position])
            {
                identifier.push(characters[position]);
                position += 1;
            }
            tokens.push(match identifier.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(identifier),
            });
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn lookahead(&self) -> Token {
        self.tokens
            .get(self.position)
            .cloned()
            .unwrap_or(Token::EndOfString)
    }

    fn consume(&mut self) -> Token {
        let token = self.lookahead();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.lookahead().as_value() {
                Token::Identifier(_) | Token::DoesNotExist => {
                    let requirement = self.parse_requirement().map_err(|message| {
                        SelectorError::new(format!("unable to parse requirement: {message}"))
                    })?;
                    requirements.push(requirement);
                    match self.consume().as_value() {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let next = self.lookahead().as_value();
                            if !matches!(next, Token::Identifier(_) | Token::DoesNotExist) {
                                return Err(SelectorError::new(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError::new(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                other => {
                    return Err(SelectorError::new(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let mut token = self.consume().as_value();
        let negated = token == Token::DoesNotExist;
        if negated {
            token = self.consume().as_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        check_key(&key)?;
        // `!k` is complete by itself (`!k=v` then fails on the `=`).
        if negated {
            return Ok(LabelRequirement {
                key,
                operator: LabelOperator::DoesNotExist,
                values: Vec::new(),
            });
        }
        if matches!(self.lookahead(), Token::EndOfString | Token::Comma) {
            return Ok(LabelRequirement {
                key,
                operator: LabelOperator::Exists,
                values: Vec::new(),
            });
        }
        let operator = self.parse_operator()?;
        let values = self.parse_values_for(operator)?;
        new_requirement(key, operator, values)
    }

    fn parse_operator(&mut self) -> Result<LabelOperator, String> {
        let token = self.consume();
        Ok(match token {
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            Token::Equals | Token::DoubleEquals => LabelOperator::Equals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: '=', '!=', '==', 'in', notin'",
                    other.literal()
                ))
            }
        })
    }

    fn parse_values_for(&mut self, operator: LabelOperator) -> Result<Vec<String>, String> {
        match operator {
            LabelOperator::In | LabelOperator::NotIn => self.parse_value_set(),
            _ => self.parse_exact_value(),
        }
    }

    fn parse_value_set(&mut self) -> Result<Vec<String>, String> {
        let token = self.consume().as_value();
        if token != Token::OpenParenthesis {
            return Err(format!("found '{}' expected: '('", token.literal()));
        }
        let next = self.lookahead().as_value();
        match next {
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifier_list()?;
                let closing = self.consume().as_value();
                if closing != Token::CloseParenthesis {
                    return Err(format!("found '{}', expected: ')'", next.literal()));
                }
                Ok(values)
            }
            Token::CloseParenthesis => {
                self.consume();
                Ok(vec![String::new()])
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    fn parse_identifier_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            match self.consume().as_value() {
                Token::Identifier(value) => {
                    values.push(value);
                    match self.lookahead().as_value() {
                        Token::Comma => continue,
                        Token::CloseParenthesis => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ))
                        }
                    }
                }
                Token::Comma => {
                    // `(,`, `,,` and `,)` stand for empty values.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead().as_value() {
                        Token::CloseParenthesis => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume();
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ))
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.lookahead(), Token::EndOfString | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.consume().as_value() {
            Token::Identifier(value) => Ok(vec![value]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let errors = is_qualified_name(key);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "<nil>: Invalid value: {key:?}: {}",
            errors.join("; ")
        ))
    }
}

/// `labels.NewRequirement`'s checks on an operator's values.
fn new_requirement(
    key: String,
    operator: LabelOperator,
    mut values: Vec<String>,
) -> Result<LabelRequirement, String> {
    values.sort();
    values.dedup();
    let mut errors = Vec::new();
    if matches!(
        operator,
        LabelOperator::GreaterThan | LabelOperator::LessThan
    ) {
        for (index, value) in values.iter().enumerate() {
            if value.parse::<i64>().is_err() {
                errors.push(format!(
                    "values[{index}]: Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
    }
    for (index, value) in values.iter().enumerate() {
        let value_errors = is_valid_label_value(value);
        if !value_errors.is_empty() {
            errors.push(format!(
                "values[{index}][{key}]: Invalid value: {value:?}: {}",
                value_errors.join("; ")
            ));
        }
    }
    if errors.is_empty() {
        Ok(LabelRequirement {
            key,
            operator,
            values,
        })
    } else if errors.len() == 1 {
        Err(errors.remove(0))
    } else {
        Err(format!("[{}]", errors.join(", ")))
    }
}

/// Parses a label selector (`labels.Parse`). The empty string (or only
/// whitespace) selects everything.
pub fn parse_label_selector(selector: &str) -> Result<LabelSelector, SelectorError> {
    let tokens = lex(selector);
    let mut parser = Parser {
        tokens,
        position: 0,
    };
    let requirements = parser.parse()?;
    Ok(LabelSelector { requirements })
}

// ---------------------------------------------------------------------------
// Field selectors (fields.ParseSelector plus field label conversion)

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldRequirement {
    /// The field, e.g. `metadata.name`.
    pub field: String,
    /// `true` for `!=`.
    pub negated: bool,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector: all terms must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The terms, sorted as upstream sorts them.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Whether the selector is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `object` satisfies every term (absent fields read as `""`).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|requirement| {
            let actual = field_value(object, &requirement.field);
            (actual == requirement.value) != requirement.negated
        })
    }
}

/// The selector as `field=value,field!=value` with `\\`, `\,` and `\=` escaped in
/// values, which parses back to the same terms.
impl std::fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, r) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(&r.field)?;
            f.write_str(if r.negated { "!=" } else { "=" })?;
            for c in r.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The string at a field label (`metadata.name` reads `/metadata/name`); only labels the
/// kind selects get here.
fn field_value<'a>(object: &'a Value, field: &str) -> &'a str {
    let pointer = format!("/{}", field.replace('.', "/"));
    object
        .pointer(&pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Parses a field selector for `kind` (`fields.ParseSelector`, then the
/// kind's field label conversion). The empty string selects everything.
pub fn parse_field_selector(selector: &str, kind: Kind) -> Result<FieldSelector, SelectorError> {
    let mut terms = split_unescaped(selector, ',');
    terms.sort();
    let mut requirements = Vec::new();
    for term in terms {
        if term.is_empty() {
            continue;
        }
        let Some((field, operator, raw_value)) = split_term(&term) else {
            return Err(SelectorError::new(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            )));
        };
        let value = unescape_field_value(raw_value)?;
        if !kind.selects_field(field) {
            return Err(SelectorError::new(kind.unsupported_field_message(field)));
        }
        requirements.push(FieldRequirement {
            field: field.to_owned(),
            negated: operator == "!=",
            value,
        });
    }
    Ok(FieldSelector { requirements })
}

/// Splits on `separator` not preceded by an escaping backslash.
fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for character in text.chars() {
        if escaped {
            current.push(character);
            escaped = false;
        } else if character == '\\' {
            current.push(character);
            escaped = true;
        } else if character == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(character);
        }
    }
    parts.push(current);
    parts
}

fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (index, _) in term.char_indices() {
        let remaining = &term[index..];
        for operator in ["!=", "==", "="] {
            if let Some(value) = remaining.strip_prefix(operator) {
                return Some((&term[..index], operator, value));
            }
        }
    }
    None
}

fn unescape_field_value(value: &str) -> Result<String, SelectorError> {
    let mut unescaped = String::with_capacity(value.len());
    let mut characters = value.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => match characters.next() {
                Some(escaped @ ('\\' | ',' | '=')) => unescaped.push(escaped),
                Some(other) => {
                    return Err(SelectorError::new(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )))
                }
                None => {
                    return Err(SelectorError::new(
                        "invalid field selector: invalid escape sequence: \\",
                    ))
                }
            },
            ',' | '=' => {
                return Err(SelectorError::new(format!(
                    "invalid field selector: unescaped character in value: {character}"
                )))
            }
            other => unescaped.push(other),
        }
    }
    Ok(unescaped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may panic on failure.
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        matches(&parse_label_selector(selector).unwrap(), &labels(pairs))
    }

    fn error(selector: &str) -> String {
        parse_label_selector(selector).unwrap_err().message
    }

    #[test]
    fn parses_every_operator() {
        let selector =
            parse_label_selector("a=1, b==2,c!=3,d in (x, y,x),e notin (z),f,!g,h>5,i<7").unwrap();
        let operators: Vec<LabelOperator> = selector
            .requirements
            .iter()
            .map(|requirement| requirement.operator)
            .collect();
        assert_eq!(
            operators,
            [
                LabelOperator::Equals,
                LabelOperator::Equals,
                LabelOperator::NotEquals,
                LabelOperator::In,
                LabelOperator::NotIn,
                LabelOperator::Exists,
                LabelOperator::DoesNotExist,
                LabelOperator::GreaterThan,
                LabelOperator::LessThan,
            ]
        );
        assert_eq!(selector.requirements[3].values, ["x", "y"]);
        assert!(parse_label_selector("").unwrap().is_empty());
        assert!(parse_label_selector("  ").unwrap().is_empty());
        assert_eq!(
            parse_label_selector("in in (in, notin)")
                .unwrap()
                .requirements[0]
                .values,
            ["in", "notin"]
        );
        assert_eq!(
            parse_label_selector("a in (,b)").unwrap().requirements[0].values,
            ["", "b"]
        );
        assert_eq!(
            parse_label_selector("a=").unwrap().requirements[0].values,
            [""]
        );
        assert!(parse_label_selector("example.com/app=web").is_ok());
    }

    #[test]
    fn matching() {
        let web = [("app", "web"), ("tier", "front"), ("n", "10")];
        assert!(selects("", &web));
        assert!(selects("app=web", &web));
        assert!(selects("app==web,tier", &web));
        assert!(!selects("app=db", &web));
        assert!(selects("app!=db", &web));
        assert!(selects("missing!=x", &web));
        assert!(selects("app in (db,web)", &web));
        assert!(!selects("app notin (db,web)", &web));
        assert!(selects("missing notin (db)", &web));
        assert!(!selects("missing in (db)", &web));
        assert!(selects("!missing", &web));
        assert!(!selects("!app", &web));
        assert!(selects("n>9,n<11", &web));
        assert!(!selects("app>1", &web));
        assert!(selects("x=", &[("x", "")]));
        let object = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(parse_label_selector("app").unwrap().matches_object(&object));
        assert!(parse_label_selector("!app")
            .unwrap()
            .matches_object(&json!({"metadata": {}})));
        let map = object["metadata"]["labels"].as_object().unwrap();
        assert!(matches(&parse_label_selector("app in (web)").unwrap(), map));
    }

    #[test]
    fn parse_errors_match_upstream() {
        assert_eq!(error("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(
            error("a b"),
            "unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', notin'"
        );
        assert_eq!(
            error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            error("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            error("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            error(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            error("a in"),
            "unable to parse requirement: found '' expected: '('"
        );
        assert_eq!(
            error("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            error("Bad_/x=1"),
            "unable to parse requirement: <nil>: Invalid value: \"Bad_/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            error("a=-b"),
            "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert_eq!(
            error("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert!(error(&format!("{}=1", "k".repeat(64)))
            .contains("name part must be no more than 63 characters"));
        assert!(error("a=b=c").starts_with("found '=', expected"));
    }

    #[test]
    fn field_selectors() {
        let secret = json!({"metadata": {"name": "s1", "namespace": "default"}, "type": "Opaque"});
        let selector = parse_field_selector("metadata.name=s1,type==Opaque", Kind::SECRET).unwrap();
        assert!(selector.matches(&secret));
        let selector = parse_field_selector("metadata.namespace!=default", Kind::SECRET).unwrap();
        assert!(!selector.matches(&secret));
        assert!(parse_field_selector("", Kind::CONFIG_MAP)
            .unwrap()
            .is_empty());
        assert!(
            parse_field_selector("metadata.name=a\\,b", Kind::CONFIG_MAP)
                .unwrap()
                .matches(&json!({"metadata": {"name": "a,b"}}))
        );
        assert!(parse_field_selector("status.phase=Active", Kind::NAMESPACE)
            .unwrap()
            .matches(&json!({"metadata": {"name": "n"}, "status": {"phase": "Active"}})));
        assert_eq!(
            parse_field_selector("spec.foo=1", Kind::SECRET)
                .unwrap_err()
                .message,
            "field label not supported: spec.foo"
        );
        assert_eq!(
            parse_field_selector("type=x", Kind::NAMESPACED_CUSTOM)
                .unwrap_err()
                .message,
            "field label not supported: type"
        );
        assert_eq!(
            parse_field_selector("metadata.namespace=x", Kind::CLUSTER_CUSTOM)
                .unwrap_err()
                .message,
            "field label not supported: metadata.namespace"
        );
        assert_eq!(
            parse_field_selector("type=x", Kind::CONFIG_MAP).unwrap_err().message,
            "\"type\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            parse_field_selector("metadata.name", Kind::SECRET)
                .unwrap_err()
                .message,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            parse_field_selector("metadata.name=a\\x", Kind::SECRET)
                .unwrap_err()
                .message,
            "invalid field selector: invalid escape sequence: \\x"
        );
    }
}
