//! A transaction held open on one pooled PostgreSQL connection and driven by
//! multi-statement messages: several statements per round trip, a failure traced back to
//! the statement that raised it, and never a connection handed back to the pool inside a
//! transaction.
//!
//! sqlx's own `Transaction` confirms its `BEGIN` before anything else is sent, which costs
//! a round trip of its own. Here the `BEGIN` travels with the statements after it; in
//! exchange this type does what `Transaction` does on failure: after a database error it
//! sends `ROLLBACK`, and when that cannot be done (the connection was cut, or the future
//! was dropped mid-message) the connection is closed rather than returned to the pool, so
//! the server ends the transaction and releases its locks.

use futures_util::TryStreamExt as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Either, PgConnection, Postgres};

/// What joins the statements of one message. The newline before the `;` ends a trailing
/// `--` comment (a column default may carry one) that would otherwise swallow the `;`.
const SEPARATOR: &str = "\n;\n";

/// A statement of a message failed.
#[derive(Debug)]
pub(super) struct StatementFailed {
    /// Its index among the statements the message was made of.
    pub statement: usize,
    /// Why.
    pub source: sqlx::Error,
}

/// An open transaction on `conn` (see the module documentation).
#[derive(Debug)]
pub(super) struct HeldTransaction {
    conn: PoolConnection<Postgres>,
    /// `true` from the moment `BEGIN` may have reached the server until the transaction is
    /// known to be over.
    open: bool,
}

impl HeldTransaction {
    /// Sends `BEGIN` and `statements` in one message. On failure the index is that of the
    /// failed statement among `statements` (a failed `BEGIN` counts as the first).
    pub(super) async fn begin(
        conn: PoolConnection<Postgres>,
        statements: &[String],
    ) -> Result<Self, StatementFailed> {
        let mut held = Self { conn, open: true };
        let mut message = Vec::with_capacity(statements.len() + 1);
        message.push("BEGIN".to_owned());
        message.extend_from_slice(statements);
        held.run(&message).await.map_err(|failed| StatementFailed {
            statement: failed.statement.saturating_sub(1),
            source: failed.source,
        })?;
        Ok(held)
    }

    /// The connection, for statements that need bound parameters or a prepared plan.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Sends `statements` in one message; the rows they return, in order. After a failure
    /// the transaction is rolled back (or, when that cannot be done, the connection will be
    /// closed when `self` drops).
    pub(super) async fn run(
        &mut self,
        statements: &[String],
    ) -> Result<Vec<PgRow>, StatementFailed> {
        let message = statements.join(SEPARATOR);
        let mut completed = 0;
        let mut rows = Vec::new();
        let mut results = sqlx::raw_sql(AssertSqlSafe(message)).fetch_many(&mut *self.conn);
        let failure = loop {
            match results.try_next().await {
                Ok(Some(Either::Left(_))) => completed += 1,
                Ok(Some(Either::Right(row))) => rows.push(row),
                Ok(None) => return Ok(rows),
                Err(source) => break source,
            }
        };
        drop(results);
        let statement = failed_statement(&failure, statements).unwrap_or(completed);
        self.roll_back_after(&failure).await;
        Err(StatementFailed {
            statement,
            source: failure,
        })
    }

    /// Commits. A database error (the commit was refused) rolls back; a lost connection
    /// leaves the outcome unknown, and the connection is closed on drop.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        match sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.open = false;
                Ok(())
            }
            Err(error) => {
                self.roll_back_after(&error).await;
                Err(error)
            }
        }
    }

    /// Rolls back. Should that fail, the connection is closed on drop.
    pub(super) async fn rollback(mut self) {
        self.roll_back().await;
    }

    /// Rolls back after `error` when the server is still there to hear it.
    async fn roll_back_after(&mut self, error: &sqlx::Error) {
        if error.as_database_error().is_some() {
            self.roll_back().await;
        }
    }

    async fn roll_back(&mut self) {
        if sqlx::raw_sql("ROLLBACK")
            .execute(&mut *self.conn)
            .await
            .is_ok()
        {
            self.open = false;
        }
    }
}

impl Drop for HeldTransaction {
    fn drop(&mut self) {
        if self.open {
            // The server ends the transaction and releases its locks when the
            // connection goes; back in the pool it would stay open.
            self.conn.close_on_drop();
        }
    }
}

/// The statement (index) the server's error position points into, when it gave one.
fn failed_statement(error: &sqlx::Error, statements: &[String]) -> Option<usize> {
    let position = error
        .as_database_error()?
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .position()?;
    match position {
        sqlx::postgres::PgErrorPosition::Original(at) => Some(statement_at(statements, at)),
        _ => None,
    }
}

/// The index of the statement holding character `position` (1-based) of the message
/// `statements.join(SEPARATOR)`; a separator counts with the statement before it.
fn statement_at(statements: &[String], position: usize) -> usize {
    let separator = SEPARATOR.chars().count();
    let mut end = 0;
    for (index, statement) in statements.iter().enumerate() {
        end += statement.chars().count() + separator;
        if position <= end {
            return index;
        }
    }
    statements.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::{SEPARATOR, statement_at};

    #[test]
    fn a_position_maps_to_the_statement_holding_it() {
        let statements = ["SELECT 1".to_owned(), "SELECT é".to_owned()];
        let message = statements.join(SEPARATOR);
        // 1-based character positions, as PostgreSQL reports them.
        let position_of =
            |needle: &str| message[..message.find(needle).unwrap()].chars().count() + 1;
        assert_eq!(statement_at(&statements, 1), 0);
        assert_eq!(statement_at(&statements, position_of("1")), 0);
        assert_eq!(statement_at(&statements, position_of("SELECT é")), 1);
        assert_eq!(statement_at(&statements, position_of("é")), 1);
        assert_eq!(statement_at(&statements, message.chars().count() + 5), 1);
    }
}
