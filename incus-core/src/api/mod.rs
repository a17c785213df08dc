//! The Incus resources the tools use, one module each. Functions take a [`Client`] and plain
//! names; the project is the client's.
//!
//! [`Client`]: crate::Client

pub mod certificates;
pub mod cluster;
pub mod instances;
pub mod migration;
pub mod networks;
pub mod operations;
pub mod profiles;
pub mod projects;
pub mod resources;
pub mod server;
pub mod snapshots;
pub mod volumes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// Incus sends `null` for empty maps and lists; read those as the type's default.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Incus's "no time" (`0001-01-01T00:00:00Z`) as `None`.
pub fn optional_time<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let time = Option::<DateTime<Utc>>::deserialize(deserializer)?;
    Ok(time.filter(|t| t.timestamp() > 0))
}

/// The last segment of an API URL such as `/1.0/instances/web/snapshots/s1`, unescaped.
pub fn last_segment(url: &str) -> String {
    let segment = url.rsplit('/').next().unwrap_or(url);
    let segment = segment.split('?').next().unwrap_or(segment);
    unescape(segment)
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
