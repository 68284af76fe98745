//! `hosts`: one line `NAME ADDRESS TIER` per selected host.

use super::{EXIT_OK, load, select};
use crate::cli::Common;

pub(super) fn hosts(c: &Common) -> anyhow::Result<i32> {
    let l = load(c)?;
    for h in select(&l, c)? {
        println!("{} {} {}", h.name, h.address, h.tier);
    }
    Ok(EXIT_OK)
}
