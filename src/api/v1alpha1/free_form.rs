//! Free-form JSON fields (config data, overrides, JSON Schemas, merge patches), read
//! with a depth limit.
//!
//! The apiserver accepts objects nested far deeper than serde_json's own recursion
//! limit, and one such object in a list would fail the whole list: every tenant's
//! objects would stop reconciling because of one. So these fields never fail to
//! decode. Content nested deeper than [`MAX_DEPTH`] is skipped without recursion and
//! the field holds [`TOO_DEEP`] instead, a string, which the schema of every free-form
//! field (an object) never allows: validation reports it, the object alone is refused,
//! and everything else keeps reconciling.

use std::{cell::Cell, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Number, Value};

/// The deepest nesting of objects and arrays a free-form field may have.
pub const MAX_DEPTH: usize = 64;

/// What a free-form field holds in place of content nested deeper than [`MAX_DEPTH`].
pub const TOO_DEEP: &str = "<content nested deeper than 64 levels, not read>";

/// Whether a free-form field was too deep to read.
pub fn is_too_deep(value: &Value) -> bool {
    value.as_str() == Some(TOO_DEEP)
}

/// Reads a free-form field; see the module documentation.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    let too_deep = Cell::new(false);
    let value = Bounded {
        depth: 1,
        too_deep: &too_deep,
    }
    .deserialize(deserializer)?;
    Ok(if too_deep.get() {
        Value::String(TOO_DEEP.to_owned())
    } else {
        value
    })
}

/// Reads an optional free-form field: `null` is `None`.
pub fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    deserialize(deserializer).map(|value| (!value.is_null()).then_some(value))
}

/// A free-form field of a ConfigEntry, kept as its compact JSON text.
///
/// The operator keeps every ConfigEntry in its watch cache. Parsed, a small config
/// costs kilobytes (every JSON object, however small, is a B-tree node of several
/// hundred bytes); as text it costs its length. Reading it parses it again, which a
/// reconcile does once, in microseconds. Reads with the depth limit above.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FreeForm(Box<str>);

impl FreeForm {
    /// The content, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).expect("free-form text is JSON written by this type")
    }

    /// The content as compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the field was too deep to read: its text is [`TOO_DEEP`] as a JSON
    /// string (which needs no escapes), told without parsing the content.
    pub fn is_too_deep(&self) -> bool {
        self.0
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            == Some(TOO_DEEP)
    }
}

impl From<&Value> for FreeForm {
    fn from(value: &Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

impl From<Value> for FreeForm {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

impl fmt::Debug for FreeForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FreeForm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FreeForm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Self::from)
    }
}

/// A JSON value `depth` levels down.
struct Bounded<'f> {
    depth: usize,
    too_deep: &'f Cell<bool>,
}

impl Bounded<'_> {
    fn child(&self) -> Self {
        Bounded {
            depth: self.depth + 1,
            too_deep: self.too_deep,
        }
    }

    /// Whether this container nests past the limit (the field itself is level 1): its
    /// content is skipped, not read.
    fn at_limit(&self) -> bool {
        if self.depth > MAX_DEPTH {
            self.too_deep.set(true);
            true
        } else {
            false
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        if self.at_limit() {
            // Skipped iteratively by the JSON reader: no recursion, no limit hit.
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Array(items));
        }
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        if self.at_limit() {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(object));
        }
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.child())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "deserialize")]
        data: Value,
        #[serde(default, deserialize_with = "option")]
        patch: Option<Value>,
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn ordinary_content_reads_as_it_is() {
        let holder: Holder =
            serde_json::from_str(r#"{"data": {"a": [1, 2.5, "x", null, true]}, "patch": null}"#)
                .unwrap();
        assert_eq!(
            holder.data,
            serde_json::json!({"a": [1, 2.5, "x", null, true]})
        );
        assert_eq!(holder.patch, None);
    }

    #[test]
    fn content_at_the_limit_reads_and_deeper_content_is_marked() {
        let at_limit = format!(r#"{{"data": {}}}"#, nested(MAX_DEPTH));
        let holder: Holder = serde_json::from_str(&at_limit).unwrap();
        assert!(!is_too_deep(&holder.data));
        let deeper = format!(r#"{{"data": {}}}"#, nested(MAX_DEPTH + 1));
        let holder: Holder = serde_json::from_str(&deeper).unwrap();
        assert!(is_too_deep(&holder.data));
    }

    #[test]
    fn far_deeper_than_the_json_readers_own_limit_still_decodes() {
        // serde_json refuses more than 128 levels when it reads a value itself.
        let list = format!(
            r#"[{{"data": {{"ok": 1}}}}, {{"data": {}}}, {{"data": {{"ok": 2}}}}]"#,
            nested(10_000)
        );
        let holders: Vec<Holder> = serde_json::from_str(&list).unwrap();
        assert_eq!(holders[0].data, serde_json::json!({"ok": 1}));
        assert!(is_too_deep(&holders[1].data));
        assert_eq!(holders[2].data, serde_json::json!({"ok": 2}));
    }

    #[test]
    fn a_free_form_field_keeps_its_content_and_its_depth_mark() {
        #[derive(serde::Deserialize)]
        struct Packed {
            data: FreeForm,
            #[serde(default)]
            patch: Option<FreeForm>,
        }
        let text = r#"{"data": {"b": [1, 2.5, "x", null], "a": {}}, "patch": null}"#;
        let packed: Packed = serde_json::from_str(text).unwrap();
        assert_eq!(
            packed.data.value(),
            serde_json::json!({"a": {}, "b": [1, 2.5, "x", null]})
        );
        assert_eq!(packed.data.as_str(), r#"{"a":{},"b":[1,2.5,"x",null]}"#);
        assert_eq!(packed.patch, None);
        let deeper = format!(r#"{{"data": {}}}"#, nested(MAX_DEPTH + 1));
        let packed: Packed = serde_json::from_str(&deeper).unwrap();
        assert!(packed.data.is_too_deep());
        let again: Value = serde_json::to_value(&packed.data).unwrap();
        assert!(is_too_deep(&again));
    }

    #[test]
    fn yaml_reads_too() {
        let holder: Holder = serde_yaml_ng::from_str("data: {pool: {max: 5}}\n").unwrap();
        assert_eq!(holder.data, serde_json::json!({"pool": {"max": 5}}));
    }
}
