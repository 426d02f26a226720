//! The message every conservation consumer reads (PostgreSQL and MySQL queue tables,
//! RabbitMQ, NATS): its payload contract is this type.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct Message {
    pub user_id: i64,
    pub kind: Kind,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Click,
    View,
    Purchase,
}

impl Kind {
    /// The `kind` column's value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::View => "view",
            Kind::Purchase => "purchase",
        }
    }
}
