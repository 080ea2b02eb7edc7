//! Feature flags in flagd's flag-definition format (`flags`, `$evaluators`,
//! `metadata`; per flag `state`, `variants`, `defaultVariant`, `targeting` in JSONLogic
//! with flagd's own operations). A definition is checked before anything is recorded,
//! and every problem is named by its JSON path, so flagd or an in-process flagd
//! provider reading the projection never meets a definition it would refuse.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The JSONLogic operations flagd evaluates, its own (`fractional`, `sem_ver`,
/// `starts_with`, `ends_with`) and `$ref` to a shared evaluator among them.
const OPERATIONS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "and",
    "or",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "min",
    "max",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
    "$ref",
];

const SEM_VER_OPERATORS: &[&str] = &["=", "!=", "<", "<=", ">", ">=", "^", "~"];

/// One problem of a flag definition, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem of a flagd flag-definition document; none when flagd would load it.
pub fn problems(document: &Value) -> Vec<Problem> {
    let mut check = Check::default();
    let Some(top) = check.object(document, "$", "a flag-definition document") else {
        return check.problems;
    };
    let allowed = ["$schema", "flags", "$evaluators", "metadata"];
    check.only_keys(top, "$", &allowed);
    let evaluators = top.get("$evaluators").map(|e| (e, "$.$evaluators"));
    let evaluators = evaluators.and_then(|(e, at)| check.object(e, at, "an object of named rules"));
    check.evaluators = evaluators
        .map(|e| e.keys().cloned().collect())
        .unwrap_or_default();
    for (name, rule) in evaluators.into_iter().flatten() {
        check.rule(rule, &key_path("$.$evaluators", name), None);
    }
    if let Some(metadata) = top.get("metadata") {
        check.metadata(metadata, "$.metadata");
    }
    match top.get("flags") {
        None => check.problem(
            "$",
            "no `flags`: a flag-definition document needs its flags",
        ),
        Some(flags) => {
            let flags = check.object(flags, "$.flags", "an object of flags by key");
            for (key, flag) in flags.into_iter().flatten() {
                check.flag(flag, &key_path("$.flags", key));
            }
        }
    }
    check.problems
}

/// `at.key`, or `at["key"]` when the key is not a plain name.
fn key_path(at: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        format!("{at}.{key}")
    } else {
        format!("{at}[{}]", Value::from(key))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
    evaluators: BTreeSet<String>,
}

impl Check {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn object<'v>(
        &mut self,
        value: &'v Value,
        at: &str,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.problem(at, format!("must be {what}, not {}", kind(value)));
        }
        object
    }

    fn only_keys(&mut self, object: &Map<String, Value>, at: &str, allowed: &[&str]) {
        for key in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let message = format!("unknown field; allowed here: {}", allowed.join(", "));
            self.problem(&key_path(at, key), message);
        }
    }

    fn metadata(&mut self, metadata: &Value, at: &str) {
        let Some(metadata) = self.object(metadata, at, "an object") else {
            return;
        };
        for (key, value) in metadata {
            if !matches!(value, Value::Bool(_) | Value::Number(_) | Value::String(_)) {
                let message = format!(
                    "metadata values are strings, numbers or booleans, not {}",
                    kind(value)
                );
                self.problem(&key_path(at, key), message);
            }
        }
    }

    fn flag(&mut self, flag: &Value, at: &str) {
        let Some(flag) = self.object(flag, at, "a flag") else {
            return;
        };
        let allowed = [
            "state",
            "variants",
            "defaultVariant",
            "targeting",
            "metadata",
        ];
        self.only_keys(flag, at, &allowed);
        match flag.get("state").and_then(Value::as_str) {
            Some("ENABLED" | "DISABLED") => {}
            _ => self.problem(
                &format!("{at}.state"),
                "must be \"ENABLED\" or \"DISABLED\"",
            ),
        }
        let variants = self.variants(flag.get("variants"), &format!("{at}.variants"));
        let default = flag.get("defaultVariant");
        let default_at = format!("{at}.defaultVariant");
        match (default, &variants) {
            (Some(Value::String(name)), Some(names)) if !names.contains(name) => {
                let known: Vec<&str> = names.iter().map(String::as_str).collect();
                let message = format!(
                    "variant {name:?} does not exist; the variants are {}",
                    known.join(", ")
                );
                self.problem(&default_at, message);
            }
            (Some(Value::String(_)), _) => {}
            (Some(other), _) => self.problem(
                &default_at,
                format!("must name a variant, not {}", kind(other)),
            ),
            (None, _) => self.problem(&default_at, "missing: every flag names its default variant"),
        }
        if let Some(targeting) = flag.get("targeting") {
            let targeting_at = format!("{at}.targeting");
            if self
                .object(targeting, &targeting_at, "a JSONLogic rule")
                .is_some()
            {
                self.rule(targeting, &targeting_at, variants.as_ref());
            }
        }
        if let Some(metadata) = flag.get("metadata") {
            self.metadata(metadata, &format!("{at}.metadata"));
        }
    }

    /// The variant names, when `variants` is an object of values of one type.
    fn variants(&mut self, variants: Option<&Value>, at: &str) -> Option<BTreeSet<String>> {
        let Some(variants) = variants else {
            self.problem(at, "missing: a flag has at least one variant");
            return None;
        };
        let variants = self.object(variants, at, "an object of variants by name")?;
        if variants.is_empty() {
            self.problem(at, "empty: a flag has at least one variant");
        }
        let mut first: Option<&'static str> = None;
        for (name, value) in variants {
            let this = kind(value);
            if matches!(value, Value::Null | Value::Array(_)) {
                let message =
                    format!("a variant is a boolean, string, number or object, not {this}");
                self.problem(&key_path(at, name), message);
            } else if first.is_some_and(|first| first != this) {
                let message = format!(
                    "is {this}, but the first variant is {}: a flag's variants share one type",
                    first.unwrap_or_default()
                );
                self.problem(&key_path(at, name), message);
            }
            first.get_or_insert(this);
        }
        Some(variants.keys().cloned().collect())
    }

    /// Checks a JSONLogic rule: every object is one known operation, `$ref` names an
    /// evaluator, and a literal variant in `fractional` exists.
    fn rule(&mut self, rule: &Value, at: &str, variants: Option<&BTreeSet<String>>) {
        match rule {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.rule(item, &format!("{at}[{i}]"), variants);
                }
            }
            Value::Object(object) if object.is_empty() => {}
            Value::Object(object) if object.len() > 1 => {
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                let message = format!("a rule is one operation, not several ({})", keys.join(", "));
                self.problem(at, message);
            }
            Value::Object(object) => {
                let Some((operation, arguments)) = object.iter().next() else {
                    return;
                };
                let here = key_path(at, operation);
                if !OPERATIONS.contains(&operation.as_str()) {
                    self.problem(
                        &here,
                        format!(
                            "unknown operation {operation:?}; flagd evaluates {}",
                            OPERATIONS.join(" ")
                        ),
                    );
                    return;
                }
                match operation.as_str() {
                    "$ref" => self.reference(arguments, &here),
                    "fractional" => self.fractional(arguments, &here, variants),
                    "sem_ver" => self.sem_ver(arguments, &here, variants),
                    // `var` names data: its arguments are not rules.
                    "var" => {}
                    _ => self.rule(arguments, &here, variants),
                }
            }
            _ => {}
        }
    }

    fn reference(&mut self, name: &Value, at: &str) {
        match name.as_str() {
            Some(name) if self.evaluators.contains(name) => {}
            Some(name) => self.problem(at, format!("no evaluator {name:?} in $.$evaluators")),
            None => self.problem(at, format!("must name an evaluator, not {}", kind(name))),
        }
    }

    fn sem_ver(&mut self, arguments: &Value, at: &str, variants: Option<&BTreeSet<String>>) {
        match arguments.as_array().map(Vec::as_slice) {
            Some([left, Value::String(operator), right]) => {
                if !SEM_VER_OPERATORS.contains(&operator.as_str()) {
                    let message = format!(
                        "unknown comparison {operator:?}; sem_ver compares with {}",
                        SEM_VER_OPERATORS.join(" ")
                    );
                    self.problem(&format!("{at}[1]"), message);
                }
                self.rule(left, &format!("{at}[0]"), variants);
                self.rule(right, &format!("{at}[2]"), variants);
            }
            _ => self.problem(at, "takes [version, comparison, version]"),
        }
    }

    /// `fractional`: an optional bucketing expression, then `[variant, weight]` buckets
    /// (weight optional, a whole number of at least 0).
    fn fractional(&mut self, arguments: &Value, at: &str, variants: Option<&BTreeSet<String>>) {
        let Some(arguments) = arguments.as_array() else {
            self.problem(at, "takes a list of [variant, weight] buckets");
            return;
        };
        let buckets = match arguments.first() {
            Some(Value::Array(_)) => &arguments[..],
            Some(expression) => {
                self.rule(expression, &format!("{at}[0]"), variants);
                &arguments[1..]
            }
            None => &arguments[..],
        };
        if buckets.is_empty() {
            self.problem(at, "has no [variant, weight] buckets");
        }
        let offset = arguments.len() - buckets.len();
        let mut total = 0u64;
        let mut malformed = false;
        for (i, bucket) in buckets.iter().enumerate() {
            let bucket_at = format!("{at}[{}]", i + offset);
            let Some(parts) = bucket.as_array().filter(|p| matches!(p.len(), 1 | 2)) else {
                self.problem(&bucket_at, "a bucket is [variant] or [variant, weight]");
                malformed = true;
                continue;
            };
            match &parts[0] {
                Value::String(name) if variants.is_some_and(|v| !v.contains(name)) => {
                    self.problem(
                        &format!("{bucket_at}[0]"),
                        format!("variant {name:?} does not exist"),
                    );
                }
                Value::String(_) => {}
                rule => self.rule(rule, &format!("{bucket_at}[0]"), variants),
            }
            match parts.get(1) {
                None => total = total.saturating_add(1),
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    total = total.saturating_add(n.as_u64().unwrap_or(0));
                }
                Some(Value::Object(_)) => total = total.saturating_add(1),
                Some(other) => {
                    let message = format!("a weight is a whole number of at least 0, not {other}");
                    self.problem(&format!("{bucket_at}[1]"), message);
                    malformed = true;
                }
            }
        }
        if !buckets.is_empty() && !malformed && total == 0 {
            self.problem(at, "the weights add up to 0: no bucket can be chosen");
        }
    }
}

#[cfg(test)]
mod tests;
