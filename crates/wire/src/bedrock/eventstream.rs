//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock's streaming
//! operations send it and botocore's `EventStreamBuffer` decodes it.
//!
//! A message is `total_len:u32 | headers_len:u32 | crc32(first 8 bytes) | headers | payload |
//! crc32(everything before)`, big-endian, CRC-32/IEEE. Bedrock only uses string headers
//! (type 7): `:message-type` (`event` or `exception`), `:event-type` or `:exception-type`,
//! and `:content-type`.

use basalt_types::BasaltError;

const STRING_HEADER: u8 = 7;
/// Prelude (12 bytes) plus the trailing message CRC (4 bytes).
const OVERHEAD: usize = 16;

/// One framed event: `:event-type` = `event_type`, the payload its JSON.
pub fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An in-stream exception (`validationException`, `modelStreamErrorException`, ...).
pub fn exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}

fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded_headers = Vec::with_capacity(96);
    for (name, value) in headers {
        // Our header names and values are short constants; lengths always fit.
        encoded_headers.push(name.len() as u8);
        encoded_headers.extend_from_slice(name.as_bytes());
        encoded_headers.push(STRING_HEADER);
        encoded_headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded_headers.extend_from_slice(value.as_bytes());
    }
    let total = OVERHEAD + encoded_headers.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// A decoded message: its string headers and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a byte stream into messages, checking both CRCs; for tests and Basalt's clients.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, BasaltError> {
    let (messages, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(BasaltError::internal("bad event-stream message: truncated"));
    }
    Ok(messages)
}

/// The whole messages at the start of `bytes` (a stream read so far), and how many bytes
/// they took; the rest is a message still arriving.
pub fn decode_prefix(all: &[u8]) -> Result<(Vec<Message>, usize), BasaltError> {
    let bad = |why: &str| BasaltError::internal(format!("bad event-stream message: {why}"));
    let mut out = Vec::new();
    let mut bytes = all;
    while bytes.len() >= 12 {
        let u32_at = |b: &[u8], i: usize| -> Result<u32, BasaltError> {
            let s = b.get(i..i + 4).ok_or_else(|| bad("truncated"))?;
            Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        let total = u32_at(bytes, 0)? as usize;
        let headers_len = u32_at(bytes, 4)? as usize;
        if total < OVERHEAD + headers_len {
            return Err(bad("length out of range"));
        }
        if total > bytes.len() {
            break;
        }
        if crc32fast::hash(&bytes[..8]) != u32_at(bytes, 8)? {
            return Err(bad("prelude CRC mismatch"));
        }
        if crc32fast::hash(&bytes[..total - 4]) != u32_at(bytes, total - 4)? {
            return Err(bad("message CRC mismatch"));
        }
        let mut h = &bytes[12..12 + headers_len];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let name_len = h[0] as usize;
            let name = h.get(1..1 + name_len).ok_or_else(|| bad("header name"))?;
            let rest = &h[1 + name_len..];
            if rest.first() != Some(&STRING_HEADER) || rest.len() < 3 {
                return Err(bad("only string headers are expected"));
            }
            let value_len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
            let value = rest
                .get(3..3 + value_len)
                .ok_or_else(|| bad("header value"))?;
            headers.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
            h = &rest[3 + value_len..];
        }
        out.push(Message {
            headers,
            payload: bytes[12 + headers_len..total - 4].to_vec(),
        });
        bytes = &bytes[total..];
    }
    Ok((out, all.len() - bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_read_in_pieces_yields_whole_messages() {
        let first = event("output", br#"{"text":"a"}"#);
        let mut stream = first.clone();
        stream.extend(event("output", br#"{"text":"b"}"#));
        for cut in [0, 5, 11, first.len() - 1] {
            assert_eq!(decode_prefix(&stream[..cut]).unwrap(), (Vec::new(), 0));
        }
        let (messages, used) = decode_prefix(&stream[..first.len() + 7]).unwrap();
        assert_eq!((messages.len(), used), (1, first.len()));
        assert_eq!(decode_prefix(&stream).unwrap().1, stream.len());
        assert!(decode_all(&stream[..stream.len() - 1]).is_err());
    }

    #[test]
    fn frames_round_trip_with_valid_crcs() {
        let mut stream = event("messageStart", br#"{"role":"assistant"}"#);
        stream.extend(exception(
            "throttlingException",
            br#"{"message":"slow down"}"#,
        ));
        let msgs = decode_all(&stream).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].header(":event-type"), Some("messageStart"));
        assert_eq!(msgs[0].header(":message-type"), Some("event"));
        assert_eq!(msgs[0].payload, br#"{"role":"assistant"}"#);
        assert_eq!(
            msgs[1].header(":exception-type"),
            Some("throttlingException")
        );
        // Any flipped bit is caught by one of the CRCs.
        for i in 0..stream.len() {
            let mut broken = stream.clone();
            broken[i] ^= 0x10;
            assert!(decode_all(&broken).is_err(), "flip at {i} went unnoticed");
        }
    }

    /// The prelude of a known message, computed independently: total length, header length
    /// and the CRC-32 of those 8 bytes.
    #[test]
    fn prelude_layout() {
        let m = event("chunk", b"{}");
        let headers_len = (1 + 11 + 1 + 2 + 5) + (1 + 13 + 1 + 2 + 16) + (1 + 13 + 1 + 2 + 5);
        assert_eq!(
            u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u32::from_be_bytes(m[4..8].try_into().unwrap()), headers_len);
        assert_eq!(m.len(), 16 + headers_len as usize + 2);
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[0..8])
        );
    }
}
