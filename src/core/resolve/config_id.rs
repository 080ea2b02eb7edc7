//! Config ids: the checks the CRD's schema makes, repeated for the CLI and for
//! objects that reach the operator some other way.

use crate::api::v1alpha1::RESERVED_CONFIG_ID_SEGMENTS;

/// Why a config id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigIdError {
    #[error("config id is empty")]
    Empty,
    #[error("config id is {0} characters long; the limit is 200")]
    TooLong(usize),
    #[error("config id {0:?} starts or ends with '/' or has an empty segment")]
    EmptySegment(String),
    #[error("config id {0:?} contains '..'")]
    DotDot(String),
    #[error(
        "config id {id:?} contains {found:?}: use lowercase letters, digits, '.', '_', '-' and '/'"
    )]
    Character { id: String, found: char },
    #[error(
        "config id {id:?} has segment {segment:?}, which does not start and end with a letter or digit"
    )]
    SegmentEdge { id: String, segment: String },
    #[error("config id {id:?} uses the reserved segment {segment:?}")]
    Reserved { id: String, segment: String },
}

/// Checks a config id against the rules of `spec.configId`.
pub fn validate_config_id(id: &str) -> Result<(), ConfigIdError> {
    if id.is_empty() {
        return Err(ConfigIdError::Empty);
    }
    if id.len() > 200 {
        return Err(ConfigIdError::TooLong(id.len()));
    }
    if let Some(found) = id.chars().find(|c| !allowed(*c)) {
        return Err(ConfigIdError::Character {
            id: id.to_owned(),
            found,
        });
    }
    if id.contains("..") {
        return Err(ConfigIdError::DotDot(id.to_owned()));
    }
    for segment in id.split('/') {
        let edges_ok = match (segment.chars().next(), segment.chars().last()) {
            (Some(first), Some(last)) => alphanumeric(first) && alphanumeric(last),
            _ => return Err(ConfigIdError::EmptySegment(id.to_owned())),
        };
        if !edges_ok {
            return Err(ConfigIdError::SegmentEdge {
                id: id.to_owned(),
                segment: segment.to_owned(),
            });
        }
        if RESERVED_CONFIG_ID_SEGMENTS.contains(&segment) {
            return Err(ConfigIdError::Reserved {
                id: id.to_owned(),
                segment: segment.to_owned(),
            });
        }
    }
    Ok(())
}

fn alphanumeric(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn allowed(c: char) -> bool {
    alphanumeric(c) || matches!(c, '.' | '_' | '-' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in ["payments", "payments/database", "a.b_c-d/e1", "0"] {
            assert_eq!(validate_config_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn hostile_ids_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("../etc/passwd", "contains '..'"),
            ("a/../b", "contains '..'"),
            ("/payments", "starts or ends with '/'"),
            ("payments/", "starts or ends with '/'"),
            ("a//b", "empty segment"),
            ("pay ments", "contains ' '"),
            ("pay\u{7}ments", "contains '\\u{7}'"),
            ("Payments", "contains 'P'"),
            ("a/-b", "does not start and end"),
            ("a/latest", "reserved segment \"latest\""),
            ("versions/a", "reserved segment \"versions\""),
            ("robert'); drop table config_versions;--", r"contains '\''"),
        ];
        for (id, expected) in cases {
            let error = validate_config_id(id).unwrap_err().to_string();
            assert!(error.contains(expected), "{id:?}: {error}");
        }
        assert!(matches!(
            validate_config_id(&"a".repeat(201)),
            Err(ConfigIdError::TooLong(201))
        ));
    }
}
