//! The `cryo check` table: one aligned row per probe, then a one-line summary.

use std::fmt::Write as _;

use super::{Probe, ProbeStatus};

/// An aligned text table: feature, status, needed for, detail (or the reason it is missing),
/// then a one-line summary. A required feature that is missing shows as `MISSING`.
pub fn render_table(probes: &[Probe]) -> String {
    let rows: Vec<[&str; 4]> = probes
        .iter()
        .map(|p| {
            let (status, text) = match &p.status {
                ProbeStatus::Found { detail } => ("found", detail.as_str()),
                ProbeStatus::Missing { reason } if p.required => ("MISSING", reason.as_str()),
                ProbeStatus::Missing { reason } => ("missing", reason.as_str()),
            };
            [p.name, status, p.needed_for, text]
        })
        .collect();
    let header = ["FEATURE", "STATUS", "NEEDED FOR", "DETAIL"];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
        );
    }
    let found = probes.iter().filter(|p| p.is_found()).count();
    let missing_required: Vec<&str> = probes
        .iter()
        .filter(|p| p.required && !p.is_found())
        .map(|p| p.name)
        .collect();
    let _ = write!(out, "{found} of {} features found; ", probes.len());
    if missing_required.is_empty() {
        out.push_str("every required feature is present\n");
    } else {
        let _ = writeln!(out, "required but missing: {}", missing_required.join(", "));
    }
    out
}
