//! The idempotent producer headers (`Producer-Id`, `-Epoch`, `-Seq`), read the same way by
//! stream appends, task event batches and worker event batches.

use axum::http::HeaderMap;
use tether_store::ProducerStamp;
use tether_types::headers::parse_producer_number;

use crate::error::ApiError;
use crate::extract::text;
use crate::headers as h;

/// The three producer headers, all or none.
pub fn producer_stamp(headers: &HeaderMap) -> Result<Option<ProducerStamp>, ApiError> {
    let id = text(headers, &h::PRODUCER_ID)?;
    let epoch = text(headers, &h::PRODUCER_EPOCH)?;
    let seq = text(headers, &h::PRODUCER_SEQ)?;
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.trim().is_empty() {
                return Err(ApiError::bad_request("Producer-Id must not be empty"));
            }
            let bad = |e: tether_types::headers::HeaderError| ApiError::bad_request(e.to_string());
            Ok(Some(ProducerStamp {
                id: id.to_string(),
                epoch: parse_producer_number("Producer-Epoch", epoch).map_err(bad)?,
                seq: parse_producer_number("Producer-Seq", seq).map_err(bad)?,
            }))
        }
        _ => Err(ApiError::bad_request(
            "Producer-Id, Producer-Epoch and Producer-Seq go together",
        )),
    }
}
