//! New secret values: drawn from the operating system's CSPRNG (through rand's thread
//! generator, reseeded from it), with at least one character of every class asked for.

use rand::{RngExt, seq::IndexedRandom, seq::SliceRandom};
use secrecy::SecretString;

use crate::api::v1alpha1::{CharacterClass, GeneratorSpec};

/// The length when the generator does not say.
pub const DEFAULT_LENGTH: usize = 32;

const SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeneratorError {
    #[error("generator: every character of class {0:?} is excluded")]
    EmptyClass(CharacterClass),
    #[error("generator: length {length} cannot hold one character of each of {classes} classes")]
    TooShort { length: usize, classes: usize },
}

fn alphabet(class: CharacterClass) -> Vec<char> {
    match class {
        CharacterClass::Lowercase => ('a'..='z').collect(),
        CharacterClass::Uppercase => ('A'..='Z').collect(),
        CharacterClass::Digits => ('0'..='9').collect(),
        CharacterClass::Symbols => SYMBOLS.chars().collect(),
    }
}

/// A new value as `spec` describes (32 letters and digits when unset).
pub fn generate(spec: Option<&GeneratorSpec>) -> Result<SecretString, GeneratorError> {
    let length = spec
        .and_then(|s| s.length)
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(DEFAULT_LENGTH);
    let classes = spec
        .and_then(|s| s.character_classes.clone())
        .unwrap_or_else(|| {
            vec![
                CharacterClass::Lowercase,
                CharacterClass::Uppercase,
                CharacterClass::Digits,
            ]
        });
    let excluded: Vec<char> = spec
        .and_then(|s| s.exclude.as_deref())
        .unwrap_or("")
        .chars()
        .collect();
    let alphabets = classes
        .iter()
        .map(|class| {
            let chars: Vec<char> = alphabet(*class)
                .into_iter()
                .filter(|c| !excluded.contains(c))
                .collect();
            if chars.is_empty() {
                Err(GeneratorError::EmptyClass(*class))
            } else {
                Ok(chars)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if length < alphabets.len() {
        return Err(GeneratorError::TooShort {
            length,
            classes: alphabets.len(),
        });
    }
    let all: Vec<char> = alphabets.iter().flatten().copied().collect();
    let mut rng = rand::rng();
    // One of each class, the rest from all of them, then shuffled.
    let mut chars: Vec<char> = alphabets
        .iter()
        .filter_map(|chars| chars.choose(&mut rng).copied())
        .collect();
    while chars.len() < length {
        chars.push(all[rng.random_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    Ok(SecretString::from(chars.into_iter().collect::<String>()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn spec(yaml: &str) -> GeneratorSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_are_32_letters_and_digits() {
        let value = generate(None).unwrap();
        let value = value.expose_secret();
        assert_eq!(value.chars().count(), 32);
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(value, generate(None).unwrap().expose_secret());
    }

    #[test]
    fn every_class_appears_and_excluded_characters_never_do() {
        let spec = spec("{length: 12, characterClasses: [Digits, Symbols], exclude: '0123456789'}");
        assert_eq!(
            generate(Some(&spec)).unwrap_err(),
            GeneratorError::EmptyClass(CharacterClass::Digits)
        );
        let spec = self::spec(
            "{length: 8, characterClasses: [Lowercase, Digits, Symbols], exclude: 'aeiou01'}",
        );
        for _ in 0..50 {
            let value = generate(Some(&spec)).unwrap();
            let value = value.expose_secret();
            assert_eq!(value.len(), 8);
            assert!(value.chars().any(|c| c.is_ascii_lowercase()), "{value}");
            assert!(value.chars().any(|c| c.is_ascii_digit()), "{value}");
            assert!(value.chars().any(|c| SYMBOLS.contains(c)), "{value}");
            assert!(!value.chars().any(|c| "aeiou01".contains(c)), "{value}");
        }
    }
}
