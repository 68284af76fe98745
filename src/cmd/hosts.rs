//! `hosts`: one line `NAME ADDRESS TIER` per selected host, the address as written (a
//! name is not resolved: this reads the inventory only).

use super::{EXIT_OK, load_files, refuse_run_options};
use crate::cli::Common;

pub(super) fn hosts(c: &Common) -> anyhow::Result<i32> {
    refuse_run_options(c, "hosts")?;
    let l = load_files(c)?;
    let selected = l
        .inv
        .select(&c.limit, &c.tier)
        .map_err(anyhow::Error::msg)?;
    for h in selected {
        println!("{} {} {}", h.name, h.written_address(), h.tier);
    }
    Ok(EXIT_OK)
}
