//! What the two-column MQTT benches share (`mqtt5`: 3.1.1 beside 5;
//! `mqtt_ws`: TCP beside WebSocket): their table rows, medians, a time
//! limit per measurement, and reading packets out of a buffer.

use std::time::Duration;

use anyhow::Context;

/// How long one measurement may take before the bench gives up on it.
pub const LIMIT: Duration = Duration::from_secs(120);

/// One table row: both columns' medians and their ratio (second / first).
pub fn row(label: String, figures: &mut [Vec<f64>; 2], show: impl Fn(f64) -> String) -> String {
    let [first, second] = figures.each_mut().map(|values| median(values));
    format!(
        "| {label} | {} | {} | {:.2} |",
        show(first),
        show(second),
        second / first
    )
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `future`, or an error once it has taken [`LIMIT`].
pub async fn within<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(LIMIT, future)
        .await
        .with_context(|| format!("took longer than {LIMIT:?}"))?
}

/// The first whole packet in `buffer`: its first byte, where its body
/// starts, and where it ends; `None` until it is all there.
pub fn whole_packet(buffer: &[u8]) -> Option<(u8, usize, usize)> {
    let mut length = 0usize;
    for at in 1..5 {
        let byte = *buffer.get(at)?;
        length |= usize::from(byte & 0x7f) << (7 * (at - 1));
        if byte & 0x80 == 0 {
            let end = at + 1 + length;
            return (buffer.len() >= end).then_some((buffer[0], at + 1, end));
        }
    }
    None
}

/// An MQTT string: two-byte length, then the bytes (spec §1.5.4).
pub fn string(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}
