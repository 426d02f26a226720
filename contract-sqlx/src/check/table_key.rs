//! Looking up a snapshot's `(schema, table)` keys by borrowed names: a fleet check looks up
//! every contracted table of every tenant, and building two `String`s per lookup was a
//! measurable share of it.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// A `(schema, table)` pair, owned or borrowed, hashed and compared like `(String, String)`.
pub(crate) trait TableKey {
    fn schema(&self) -> &str;
    fn table(&self) -> &str;
}

impl TableKey for (String, String) {
    fn schema(&self) -> &str {
        &self.0
    }
    fn table(&self) -> &str {
        &self.1
    }
}

impl TableKey for (&str, &str) {
    fn schema(&self) -> &str {
        self.0
    }
    fn table(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn TableKey + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn TableKey + 'a) {
        self
    }
}

/// The same hash as the tuple's (`str` hashes its bytes and a terminator, in order).
impl Hash for dyn TableKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.schema().hash(state);
        self.table().hash(state);
    }
}

impl PartialEq for dyn TableKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.schema() == other.schema() && self.table() == other.table()
    }
}

impl Eq for dyn TableKey + '_ {}

#[cfg(test)]
mod tests {
    use super::TableKey;
    use std::collections::HashMap;

    #[test]
    fn borrowed_names_find_owned_keys() {
        let mut map = HashMap::new();
        map.insert(("tenant_1".to_owned(), "events".to_owned()), 1);
        map.insert(("tenant_1".to_owned(), "orders".to_owned()), 2);
        let get = |schema: &str, table: &str| map.get(&(schema, table) as &dyn TableKey).copied();
        assert_eq!(get("tenant_1", "events"), Some(1));
        assert_eq!(get("tenant_1", "orders"), Some(2));
        assert_eq!(get("tenant_1", "event"), None);
        assert_eq!(get("tenant_1e", "vents"), None);
    }
}
