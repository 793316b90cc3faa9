//! A YAML document as a tree of nodes that remember where they were written, so validation can
//! point at `FILE:LINE:COL` of any field it complains about.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// 1-based line and column of a node in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// One step of a path into a document: a map key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl From<&'static str> for Seg<'static> {
    fn from(k: &'static str) -> Self {
        Seg::Key(k)
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) | Value::Number(s) => Some(s),
            _ => None,
        }
    }

    /// The deepest node along `path` that exists, and whether the whole path resolved.
    fn deepest(&self, path: &[Seg<'_>]) -> (&Node, bool) {
        let mut node = self;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return (node, false),
            }
        }
        (node, true)
    }

    /// The position of the deepest node along `path` that exists: a validation error about a
    /// field left at its default still points at its enclosing block.
    pub fn pos_of(&self, path: &[Seg<'_>]) -> Pos {
        self.deepest(path).0.pos
    }

    /// Position of the key itself (not its value) for the last segment, when it is a key.
    pub fn key_pos(&self, path: &[Seg<'_>]) -> Pos {
        let Some((Seg::Key(last), parent)) = path.split_last() else {
            return self.pos_of(path);
        };
        match self.deepest(parent) {
            (node, true) => node.entry(last).map(|(k, _)| k.pos).unwrap_or(node.pos),
            (node, false) => node.pos,
        }
    }

    /// Every map key anywhere in the tree, with its position, for checks that look at keys.
    pub fn walk_keys<'a>(&'a self, f: &mut impl FnMut(&'a Key)) {
        match &self.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    f(k);
                    v.walk_keys(f);
                }
            }
            Value::Seq(items) => items.iter().for_each(|n| n.walk_keys(f)),
            _ => {}
        }
    }
}

fn pos(loc: &serde_saphyr::Location) -> Pos {
    Pos {
        line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
        col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
    }
}

impl From<Spanned<RawValue>> for Node {
    fn from(s: Spanned<RawValue>) -> Self {
        Node {
            pos: pos(&s.referenced),
            value: s.value.0,
        }
    }
}

/// The deserialisation target; converted into `Node` by the `Spanned` wrapper's location.
pub struct RawValue(Value);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<RawValue, E> {
        Ok(RawValue(Value::Bool(b)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<RawValue, E> {
        Ok(RawValue(Value::Number(n.to_string())))
    }
    fn visit_u64<E>(self, n: u64) -> Result<RawValue, E> {
        Ok(RawValue(Value::Number(n.to_string())))
    }
    fn visit_f64<E>(self, n: f64) -> Result<RawValue, E> {
        Ok(RawValue(Value::Number(n.to_string())))
    }
    fn visit_str<E>(self, s: &str) -> Result<RawValue, E> {
        Ok(RawValue(Value::String(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<RawValue, E> {
        Ok(RawValue(Value::String(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(Node::from(item));
        }
        Ok(RawValue(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawValue>>()? {
            let value: Spanned<RawValue> = map.next_value()?;
            let key_pos = pos(&key.referenced);
            let name = match key.value.0 {
                Value::String(s) | Value::Number(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    return Err(de::Error::custom("mapping keys must be scalars"));
                }
            };
            entries.push((Key { name, pos: key_pos }, Node::from(value)));
        }
        Ok(RawValue(Value::Map(entries)))
    }
}
