//! The protocol's rules for creating streams and forks (protocol 4.2, 5.1) and for when a
//! stream expires, apart from any storage. Each backend looks up what these need (the fork
//! source, the end of the append at the fork point) in its own way and asks these functions
//! what follows, so both backends give the same answers.

use tether_types::headers::same_media_type;
use tether_types::Offset;

use crate::model::*;

/// The content type a stream without one gets.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The configuration a create request asks for, given the fork source's when it is a fork:
/// forks default to the source's content type (and must not ask for another), and inherit its
/// expiry when they ask for none.
pub(crate) fn stream_config(
    request: &CreateStream,
    source: Option<&StreamConfig>,
) -> Result<StreamConfig, CreateError> {
    let content_type = match (&request.content_type, source) {
        (Some(ct), Some(src)) => {
            if !same_media_type(ct, &src.content_type) {
                return Err(CreateError::ForkContentTypeMismatch);
            }
            ct.clone()
        }
        (Some(ct), None) => ct.clone(),
        (None, Some(src)) => src.content_type.clone(),
        (None, None) => DEFAULT_CONTENT_TYPE.to_string(),
    };
    let (ttl_secs, expires_at) = match (source, request.ttl_secs, request.expires_at) {
        (Some(src), None, None) => (src.ttl_secs, src.expires_at),
        (_, ttl, at) => (ttl, at),
    };
    Ok(StreamConfig {
        content_type,
        ttl_secs,
        expires_at,
    })
}

/// Where a fork is anchored in its source: the requested offset, or the source's tail.
pub(crate) fn fork_anchor(spec: &ForkFrom, source_tail: u64) -> Result<u64, CreateError> {
    let anchor = spec.offset.map_or(source_tail, |o| o.0);
    if anchor > source_tail {
        return Err(CreateError::ForkOffsetBeyondTail);
    }
    Ok(anchor)
}

/// Whether finding the fork point needs the end of the append that starts at the anchor.
pub(crate) fn needs_boundary(spec: &ForkFrom) -> bool {
    spec.sub_offset != 0
}

/// The fork point: `anchor` plus the sub-offset, which must stay within the append that starts
/// at the anchor (`boundary` is where it ends, `None` when no append starts there). Also the
/// resolved request, which an idempotent re-creation must match.
pub(crate) fn fork_point(
    spec: &ForkFrom,
    anchor: u64,
    boundary: Option<u64>,
) -> Result<(u64, ForkFrom), CreateError> {
    let point = if needs_boundary(spec) {
        let boundary = boundary.ok_or(CreateError::SubOffsetOutOfRange)?;
        let point = anchor.saturating_add(spec.sub_offset);
        if point > boundary {
            return Err(CreateError::SubOffsetOutOfRange);
        }
        point
    } else {
        anchor
    };
    let resolved = ForkFrom {
        source: spec.source.clone(),
        offset: Some(Offset(anchor)),
        sub_offset: spec.sub_offset,
    };
    Ok((point, resolved))
}

/// One side of an idempotent PUT's comparison: what a stream is, or what a request asks for.
pub(crate) struct Shape<'a> {
    pub config: &'a StreamConfig,
    pub closed: bool,
    /// The resolved fork request (see [`fork_point`]).
    pub fork: Option<&'a ForkFrom>,
}

/// Whether a create request matches the existing stream, so the PUT succeeds unchanged.
pub(crate) fn same_stream(existing: &Shape<'_>, requested: &Shape<'_>) -> bool {
    same_media_type(
        &existing.config.content_type,
        &requested.config.content_type,
    ) && existing.config.ttl_secs == requested.config.ttl_secs
        && existing.config.expires_at == requested.config.expires_at
        && existing.closed == requested.closed
        && existing.fork == requested.fork
}

/// Whether a stream has expired at `now_ms`: past its expiry time, or idle (no access since
/// `last_access_ms`) for its whole sliding TTL.
pub(crate) fn expired(config: &StreamConfig, last_access_ms: i64, now_ms: i64) -> bool {
    if let Some(at) = config.expires_at {
        if now_ms >= at.timestamp_millis() {
            return true;
        }
    }
    if let Some(ttl) = config.ttl_secs {
        let ttl_ms = i64::try_from(ttl).unwrap_or(i64::MAX).saturating_mul(1000);
        if now_ms.saturating_sub(last_access_ms) >= ttl_ms {
            return true;
        }
    }
    false
}
