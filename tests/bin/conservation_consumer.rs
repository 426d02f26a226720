//! The consumers the conservation tests run (and kill) as separate processes, all four in
//! one binary so that sqlx, tokio and both broker clients are linked once:
//!
//! `conservation_consumer pg|mysql|rabbitmq|nats <that consumer's arguments>`
//!
//! Each module's documentation gives its arguments and exit codes.

#[path = "broker_writer.rs"]
mod broker_writer;
#[path = "mysql_conservation_consumer.rs"]
mod mysql;
#[path = "nats_conservation_consumer.rs"]
mod nats;
#[path = "pg_conservation_consumer.rs"]
mod pg;
#[path = "rabbitmq_conservation_consumer.rs"]
mod rabbitmq;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().collect();
    let consumer = if args.len() > 1 {
        args.remove(1)
    } else {
        String::new()
    };
    match consumer.as_str() {
        "pg" => pg::main(args).await,
        "mysql" => mysql::main(args).await,
        "rabbitmq" => rabbitmq::main(args).await,
        "nats" => nats::main(args).await,
        other => Err(format!(
            "unknown consumer `{other}`; usage: conservation_consumer pg|mysql|rabbitmq|nats <arguments>"
        )
        .into()),
    }
}
