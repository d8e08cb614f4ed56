//! Reading a row's columns by position, in the order its query selects them.
//!
//! `#[derive(sqlx::FromRow)]` reads each column by name: it hashes the name
//! and compares it with the row's, for every column of every row. For the
//! wide rows that pages are made of (an order has 24 columns) that lookup
//! was a fifth of decoding them. [`Columns`] takes the columns in turn and
//! only compares each one's name with the one the reader expects, so a
//! select list and its reader that drift apart fail with an error naming
//! the column instead of decoding the wrong one.

use sqlx::postgres::{PgRow, Postgres};
use sqlx::{Column, Decode, Row, Type};

/// The columns of one row, taken in order.
#[derive(Debug)]
pub struct Columns<'r> {
    row: &'r PgRow,
    next: usize,
}

impl<'r> Columns<'r> {
    pub fn new(row: &'r PgRow) -> Self {
        Self { row, next: 0 }
    }

    /// Whether the query selected columns not taken yet.
    pub fn more(&self) -> bool {
        self.next < self.row.len()
    }

    /// The next column, which must be called `name`.
    pub fn next<T>(&mut self, name: &str) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Postgres> + Type<Postgres>,
    {
        let index = self.next;
        self.next += 1;
        let found = self.row.try_column(index)?.name();
        if found != name {
            return Err(sqlx::Error::ColumnNotFound(format!(
                "{name} (the query's column {index} is {found})"
            )));
        }
        self.row.try_get(index)
    }
}
