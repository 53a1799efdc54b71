//! Result rows as the store's types.

use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Row, SessionRow};

pub(super) fn session_row(r: &postgres::Row) -> SessionRow {
    SessionRow {
        id: r.get(0),
        name: r.get(1),
        created_at: r.get(2),
        updated_at: r.get(3),
        record: r.get(4),
    }
}

pub(super) fn data_row(r: &postgres::Row) -> Row {
    Row {
        key: r.get(0),
        value: r.get(1),
    }
}

/// A row of `SELECT seq, k, v`: its position and the row.
pub(super) fn positioned_row(r: &postgres::Row) -> (i64, Row) {
    (
        r.get(0),
        Row {
            key: r.get(1),
            value: r.get(2),
        },
    )
}

pub(super) fn u32_col(r: &postgres::Row, i: usize) -> Result<u32> {
    let v: i64 = r.get(i);
    u32::try_from(v).map_err(|_| EngineError::Corrupt {
        table: "keyslots",
        session_id: 0,
        row: format!("column {i}"),
        reason: "a keyslot number or KDF parameter is out of range",
    })
}

/// An `(seq, entry)` row of the audit table.
pub(super) fn audit_row(r: &postgres::Row) -> (u64, Vec<u8>) {
    (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))
}
