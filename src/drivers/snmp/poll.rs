//! The reads behind a poll: table walks with GETBULK (several columns per request) and GETs of
//! known instances in batches. Nothing here is per worker: a poll is a handful of PDUs whatever
//! the number of ports.

use super::error::SnmpError;
use super::session::{Arcs, Reply, Request, Transport, Val, VarBind, dotted, error_status_name};

/// Varbinds per GET. Small enough for any agent's PDU size (and snmpsim's 64-varbind cap),
/// large enough that a 48-port switch is a few requests. Halved when an agent says tooBig.
pub const GET_BATCH: usize = 40;
/// Rows per GETBULK; the agent may return fewer.
const BULK_VARBINDS: u32 = 48;
/// A walk never goes on for more rows than this: protects against agents that loop.
const MAX_ROWS: usize = 100_000;

pub mod oids {
    //! Numeric OIDs (IF-MIB and SNMPv2-MIB are not shipped by Debian, and numbers are what goes
    //! on the wire anyway).
    pub const SYS_UPTIME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
    pub const SYS_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
    pub const IF_DESCR: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2];
    pub const IF_SPEED: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 5];
    pub const IF_ADMIN_STATUS: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 7];
    pub const IF_OPER_STATUS: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 8];
    pub const IF_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
    pub const IF_HIGH_SPEED: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15];

    pub fn instance(column: &[u64], index: u32) -> Vec<u64> {
        let mut v = column.to_vec();
        v.push(index.into());
        v
    }
}

/// Rejects a reply whose error-status is set; `tooBig` is returned as `Ok(None)` so the caller
/// can split the request.
fn check(t: &Transport, reply: Reply, sent: &[Arcs]) -> Result<Option<Vec<VarBind>>, SnmpError> {
    match reply.error_status {
        0 => Ok(Some(reply.varbinds)),
        1 => Ok(None),
        status => {
            let at = usize::try_from(reply.error_index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| sent.get(i))
                .map(|o| format!(" at {}", dotted(o)))
                .unwrap_or_default();
            let name = error_status_name(status);
            Err(match status {
                // SNMPv1-style "no such object"; v2c agents answer noSuchObject varbinds instead.
                2 => SnmpError::NoSuchName {
                    address: t.address().to_string(),
                    what: format!("object{at} (noSuchName)"),
                },
                6 | 16 => SnmpError::AuthFailure {
                    address: t.address().to_string(),
                    reason: format!(
                        "{name}{at}: the credentials do not allow this (read-only community or \
                         user without write access)"
                    ),
                },
                _ => SnmpError::Protocol {
                    address: t.address().to_string(),
                    detail: format!("{name}{at}"),
                },
            })
        }
    }
}

/// GETs every OID, in batches; the result is in request order.
pub async fn get(t: &mut Transport, oids: &[Arcs]) -> Result<Vec<Val>, SnmpError> {
    let mut out = Vec::with_capacity(oids.len());
    let mut batch = GET_BATCH;
    let mut rest = oids;
    while !rest.is_empty() {
        let n = batch.min(rest.len());
        let chunk = &rest[..n];
        let reply = t.request(Request::Get(chunk)).await?;
        match check(t, reply, chunk)? {
            None if n > 1 => {
                batch = n / 2;
                continue;
            }
            None => {
                return Err(SnmpError::Protocol {
                    address: t.address().to_string(),
                    detail: "tooBig for a single varbind".into(),
                });
            }
            Some(vbs) => {
                if vbs.len() != n {
                    return Err(SnmpError::Protocol {
                        address: t.address().to_string(),
                        detail: format!("asked for {n} objects, got {}", vbs.len()),
                    });
                }
                for ((oid, val), want) in vbs.into_iter().zip(chunk) {
                    if &oid != want {
                        return Err(SnmpError::Protocol {
                            address: t.address().to_string(),
                            detail: format!("asked for {}, got {}", dotted(want), dotted(&oid)),
                        });
                    }
                    out.push(val);
                }
            }
        }
        rest = &rest[n..];
    }
    Ok(out)
}

/// Walks several table columns at once with GETBULK; returns, per column, `(index, value)` in
/// agent order. Columns may have different rows (ifXTable can lack some ifTable rows); each
/// column stops at its own end.
pub async fn walk_columns(
    t: &mut Transport,
    columns: &[&[u64]],
) -> Result<Vec<Vec<(u32, Val)>>, SnmpError> {
    let mut out: Vec<Vec<(u32, Val)>> = vec![Vec::new(); columns.len()];
    let mut cursor: Vec<Option<Arcs>> = columns.iter().map(|c| Some(c.to_vec())).collect();
    let mut rows = 0usize;
    loop {
        let active: Vec<usize> = (0..columns.len())
            .filter(|&i| cursor[i].is_some())
            .collect();
        if active.is_empty() {
            return Ok(out);
        }
        let req: Vec<Arcs> = active.iter().filter_map(|&i| cursor[i].clone()).collect();
        let reps = (BULK_VARBINDS / active.len() as u32).max(1);
        let reply = t
            .request(Request::GetBulk {
                oids: &req,
                max_repetitions: reps,
            })
            .await?;
        let vbs = match check(t, reply, &req)? {
            Some(v) => v,
            // tooBig on a bulk: the agent should have truncated; treat as a protocol error.
            None => {
                return Err(SnmpError::Protocol {
                    address: t.address().to_string(),
                    detail: "tooBig on GETBULK".into(),
                });
            }
        };
        if vbs.is_empty() {
            return Err(SnmpError::Protocol {
                address: t.address().to_string(),
                detail: "empty GETBULK reply".into(),
            });
        }
        // Row-major: varbind k belongs to active column k % n. A column is done when it leaves
        // its subtree, hits endOfMibView, or fails to advance.
        let mut advanced = vec![false; columns.len()];
        let mut finished = vec![false; columns.len()];
        for (k, (oid, val)) in vbs.into_iter().enumerate() {
            let col = active[k % active.len()];
            if finished[col] {
                continue;
            }
            let prefix = columns[col];
            let prev = cursor[col].as_deref().unwrap_or(prefix);
            let index = oid
                .strip_prefix(prefix)
                .filter(|rest| rest.len() == 1)
                .and_then(|rest| u32::try_from(rest[0]).ok());
            match (index, &val) {
                (Some(i), v) if *v != Val::EndOfMibView && oid.as_slice() > prev => {
                    out[col].push((i, val));
                    cursor[col] = Some(oid);
                    advanced[col] = true;
                    rows += 1;
                }
                _ => finished[col] = true,
            }
        }
        for &i in &active {
            if finished[i] || !advanced[i] {
                cursor[i] = None;
            }
        }
        if rows > MAX_ROWS {
            return Err(SnmpError::Protocol {
                address: t.address().to_string(),
                detail: format!("table walk exceeded {MAX_ROWS} rows"),
            });
        }
    }
}
