//! Port keys to ifIndex. A `BoardNetwork.port` is an ifName, an ifDescr or a numeric ifIndex
//! (indexes are sparse on real switches: 10101, 10102, ... per module). Exact matches win over
//! case-insensitive ones; several interfaces matching at the same level is an error listing
//! them, never a guess. `ifName:`, `ifDescr:` and `ifIndex:` prefixes force one column, which
//! is the way out of an ambiguity.

use super::error::SnmpError;
use std::collections::BTreeMap;

/// One row of the interface table as far as naming goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub index: u32,
    /// IF-MIB ifName; `None` on agents without the ifXTable.
    pub name: Option<String>,
    pub descr: Option<String>,
}

impl Interface {
    /// `10105 (Gi1/0/5, "GigabitEthernet1/0/5")`, for candidate lists.
    pub fn label(&self) -> String {
        match (&self.name, &self.descr) {
            (Some(n), Some(d)) => format!("ifIndex {} (ifName {n}, ifDescr \"{d}\")", self.index),
            (Some(n), None) => format!("ifIndex {} (ifName {n})", self.index),
            (None, Some(d)) => format!("ifIndex {} (ifDescr \"{d}\")", self.index),
            (None, None) => format!("ifIndex {}", self.index),
        }
    }
}

/// The name→index map of one switch, as last walked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap {
    pub interfaces: BTreeMap<u32, Interface>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Any,
    Name,
    Descr,
    Index,
}

impl PortMap {
    pub fn get(&self, index: u32) -> Option<&Interface> {
        self.interfaces.get(&index)
    }

    /// The ifIndex `key` designates on switch `switch` (the name is for messages).
    pub fn resolve(&self, switch: &str, key: &str) -> Result<u32, SnmpError> {
        let (column, want) = split_key(key);
        let not_found = || SnmpError::NotFound {
            switch: switch.to_string(),
            key: key.to_string(),
        };
        if column == Column::Index {
            return match want.parse::<u32>() {
                Ok(i) if self.interfaces.contains_key(&i) => Ok(i),
                _ => Err(not_found()),
            };
        }
        let exact = self.matching(column, want, |a, b| a == b);
        let found = if exact.is_empty() {
            self.matching(column, want, |a, b| a.to_lowercase() == b.to_lowercase())
        } else {
            exact
        };
        match found.as_slice() {
            [] => Err(not_found()),
            [one] => Ok(*one),
            many => Err(SnmpError::Ambiguous {
                switch: switch.to_string(),
                key: key.to_string(),
                candidates: many
                    .iter()
                    .filter_map(|i| self.interfaces.get(i).map(Interface::label))
                    .collect(),
            }),
        }
    }

    /// Indexes whose name or descr (or, for a number, index) match; deduplicated, sorted.
    fn matching(&self, column: Column, want: &str, eq: impl Fn(&str, &str) -> bool) -> Vec<u32> {
        let numeric = want.parse::<u32>().ok();
        self.interfaces
            .values()
            .filter(|i| {
                let by_name = matches!(column, Column::Any | Column::Name)
                    && i.name.as_deref().is_some_and(|n| eq(n, want));
                let by_descr = matches!(column, Column::Any | Column::Descr)
                    && i.descr.as_deref().is_some_and(|d| eq(d, want));
                let by_index = column == Column::Any && numeric == Some(i.index);
                by_name || by_descr || by_index
            })
            .map(|i| i.index)
            .collect()
    }
}

fn split_key(key: &str) -> (Column, &str) {
    for (prefix, column) in [
        ("ifName:", Column::Name),
        ("ifDescr:", Column::Descr),
        ("ifIndex:", Column::Index),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return (column, rest);
        }
    }
    (Column::Any, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> PortMap {
        let mut m = PortMap::default();
        for (index, name, descr) in [
            (1, "Vl1", "Vlan1"),
            (10101, "Gi1/0/1", "GigabitEthernet1/0/1"),
            (10102, "Gi1/0/2", "GigabitEthernet1/0/2"),
            (10201, "Gi1/0/10", "GigabitEthernet1/0/10"),
            (30001, "St1", "Stack Port"),
            (30002, "St2", "Stack Port"),
            (6001, "mgmt0", "Management0"),
            (6002, "MGMT0", "Management1"),
            (7, "10101", "Odd"),
        ] {
            m.interfaces.insert(
                index,
                Interface {
                    index,
                    name: Some(name.into()),
                    descr: Some(descr.into()),
                },
            );
        }
        m
    }

    #[test]
    fn by_each_key() {
        let m = map();
        assert_eq!(m.resolve("sw", "Gi1/0/2"), Ok(10102));
        assert_eq!(m.resolve("sw", "GigabitEthernet1/0/10"), Ok(10201));
        assert_eq!(m.resolve("sw", "10102"), Ok(10102));
        assert_eq!(m.resolve("sw", "gi1/0/2"), Ok(10102));
        assert_eq!(m.resolve("sw", "mgmt0"), Ok(6001), "exact match wins");
    }

    #[test]
    fn ambiguity_lists_candidates() {
        let m = map();
        for key in ["Stack Port", "Mgmt0", "10101"] {
            match m.resolve("sw", key) {
                Err(SnmpError::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 2),
                other => panic!("{key}: {other:?}"),
            }
        }
        let e = m.resolve("sw", "stack port").unwrap_err();
        assert!(e.to_string().contains("ifIndex 30001 (ifName St1"), "{e}");
    }

    #[test]
    fn prefixes_disambiguate() {
        let m = map();
        assert_eq!(m.resolve("sw", "ifIndex:10101"), Ok(10101));
        assert_eq!(m.resolve("sw", "ifName:10101"), Ok(7));
        assert_eq!(m.resolve("sw", "ifDescr:Vlan1"), Ok(1));
        assert!(matches!(
            m.resolve("sw", "ifIndex:999"),
            Err(SnmpError::NotFound { .. })
        ));
        assert!(matches!(
            m.resolve("sw", "ifDescr:Vl1"),
            Err(SnmpError::NotFound { .. })
        ));
    }

    #[test]
    fn not_found() {
        assert!(matches!(
            map().resolve("sw", "Gi9/9/9"),
            Err(SnmpError::NotFound { .. })
        ));
        assert!(matches!(
            PortMap::default().resolve("sw", "1"),
            Err(SnmpError::NotFound { .. })
        ));
    }
}
