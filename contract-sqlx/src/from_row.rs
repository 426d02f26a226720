//! `sqlx::FromRow` for the crate's own row types, written out rather than derived.
//!
//! sqlx's derive lives in `sqlx-macros`, a proc macro that compiles every enabled driver
//! (and the bundled SQLite C library) a second time, for the host. Deriving here would
//! force that on every user of this crate even when they never derive `FromRow`
//! themselves, and on the `ui` tests' separate trybuild project.

/// Implements `sqlx::FromRow<'_, $row>` for a struct: each listed field is read from the
/// column of its own name (or the string after `=`); fields after `default:` are left at
/// their `Default` and filled in by the caller.
macro_rules! impl_from_row {
    (
        $row:ty => $name:ident {
            $($field:ident $(= $column:literal)?),* $(,)?
        }
        $(default: $($skipped:ident),+)?
    ) => {
        impl<'r> sqlx::FromRow<'r, $row> for $name {
            fn from_row(row: &'r $row) -> sqlx::Result<Self> {
                use sqlx::Row as _;
                Ok(Self {
                    $($field: row.try_get($crate::from_row::impl_from_row!(@column $field $($column)?))?,)*
                    $($($skipped: Default::default(),)+)?
                })
            }
        }
    };
    (@column $field:ident $column:literal) => { $column };
    (@column $field:ident) => { stringify!($field) };
}

pub(crate) use impl_from_row;
