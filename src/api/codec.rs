//! The protobuf codec of our services: prost's, except that a request that
//! does not decode (a key that is not UTF-8, a truncated message, nesting
//! past prost's recursion limit) is INVALID_ARGUMENT, as the proto promises
//! for malformed requests, rather than tonic's INTERNAL. Selected for the
//! generated servers and clients in build.rs (`codec_path`).
//!
//! Before a request that carries values is decoded, its wire bytes are
//! walked once (linear time, no allocation) along the fields that lead to
//! values, counting them and their nesting: decoding multiplies memory
//! (issue 11: a 4 MiB message of 2.1 M empty values took 252 MB decoded),
//! so a request with more than `--max-request-values` values or nesting
//! deeper than `MAX_VALUE_DEPTH` is refused with INVALID_ARGUMENT naming
//! the limit before prost allocates anything, and counted in
//! `state_bound_refusals_total`.

use std::{
    marker::PhantomData,
    sync::atomic::{AtomicUsize, Ordering},
};

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::Error;

/// Value nesting accepted in a request, in levels of lists and maps. Below
/// prost's recursion limit (100 message levels) on every path to a value
/// (a Transact op's value starts three levels down, and each value level
/// takes two), so that a too-deep value is refused here, naming the limit.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Default of `--max-request-values`.
pub const DEFAULT_MAX_REQUEST_VALUES: usize = 200_000;

/// Values (and map entries) one request may carry. A process-wide setting
/// because the generated code builds codecs with `Default`: the server sets
/// it once at startup from `--max-request-values`.
static MAX_REQUEST_VALUES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_REQUEST_VALUES);

/// Sets `--max-request-values` for every request decoded from now on.
pub fn set_max_request_values(n: usize) {
    MAX_REQUEST_VALUES.store(n, Ordering::Relaxed);
}

/// prost's codec with our decode errors.
#[derive(Debug, Clone, Copy)]
pub struct ProstCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(
            ProstDecoder::new(BufferSettings::default()),
            Shape::of::<U>(),
        )
    }
}

/// prost's decoder, mapping what it refuses to INVALID_ARGUMENT, after the
/// value scan for the requests that carry values.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>, Option<Shape>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if let Some(shape) = self.1 {
            let chunk = buf.chunk();
            // tonic hands over one contiguous message; anything else is
            // left to prost unscanned.
            if chunk.len() >= buf.remaining() {
                check_values(&chunk[..buf.remaining()], shape)?;
            }
        }
        U::decode(buf).map(Some).map_err(|e| {
            crate::metrics::bound_refusal("malformed");
            Error::invalid(format!(
                "the request is not a valid {} message: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("protobuf"),
                e
            ))
            .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The messages on the paths from a request to its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// PutRequest and PutWithTtlRequest (value: field 2).
    Put,
    BatchPut,
    BatchPutItem,
    Transact,
    TransactOp,
    Value,
    ValueList,
    ValueMap,
    MapEntry,
}

impl Shape {
    /// The shape of request type `U`, if it carries values.
    fn of<U>() -> Option<Shape> {
        match std::any::type_name::<U>().rsplit("::").next()? {
            "PutRequest" | "PutWithTtlRequest" => Some(Shape::Put),
            "BatchPutRequest" => Some(Shape::BatchPut),
            "TransactRequest" => Some(Shape::Transact),
            _ => None,
        }
    }

    /// The shape of the length-delimited field `field`, if it leads to values.
    fn child(self, field: u64) -> Option<Shape> {
        match (self, field) {
            (Shape::Put | Shape::BatchPutItem | Shape::MapEntry, 2) => Some(Shape::Value),
            (Shape::BatchPut, 1) => Some(Shape::BatchPutItem),
            (Shape::Transact, 1) => Some(Shape::TransactOp),
            (Shape::TransactOp, 1 | 2) => Some(Shape::Put),
            (Shape::Value, 7) => Some(Shape::ValueList),
            (Shape::Value, 8) => Some(Shape::ValueMap),
            (Shape::ValueList, 1) => Some(Shape::Value),
            (Shape::ValueMap, 1) => Some(Shape::MapEntry),
            _ => None,
        }
    }
}

/// Why the scan refused a request.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    TooMany,
    TooDeep,
    /// Not valid protobuf: prost will say what is wrong.
    Malformed,
}

/// Refuses a request with too many or too deeply nested values.
fn check_values(wire: &[u8], shape: Shape) -> Result<(), Status> {
    let max = MAX_REQUEST_VALUES.load(Ordering::Relaxed);
    let mut count = 0;
    match walk(wire, shape, 0, &mut count, max) {
        Ok(()) | Err(Refusal::Malformed) => Ok(()),
        Err(Refusal::TooMany) => {
            crate::metrics::bound_refusal("--max-request-values");
            Err(Error::limit(
                format_args!("the request carries more than {max} values and map entries"),
                max as u64,
                " values",
                "--max-request-values",
            )
            .into())
        }
        Err(Refusal::TooDeep) => {
            crate::metrics::bound_refusal("value-depth");
            Err(Error::invalid_field(
                "value",
                format!(
                    "a value nests lists/maps more than {MAX_VALUE_DEPTH} levels deep; the \
                     limit is {MAX_VALUE_DEPTH} levels (fixed)"
                ),
            )
            .into())
        }
    }
}

/// Walks one message of `shape`: each byte is read once, by the innermost
/// message holding it; fields that lead to no value are skipped by length.
fn walk(
    mut buf: &[u8],
    shape: Shape,
    depth: usize,
    count: &mut usize,
    max: usize,
) -> Result<(), Refusal> {
    let depth = match shape {
        Shape::Value => depth + 1,
        _ => depth,
    };
    if matches!(shape, Shape::Value | Shape::MapEntry) {
        *count += 1;
        if *count > max {
            return Err(Refusal::TooMany);
        }
    }
    // A value at depth d holds lists/maps d - 1 levels deep.
    if depth > MAX_VALUE_DEPTH + 1 {
        return Err(Refusal::TooDeep);
    }
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..).ok_or(Refusal::Malformed)?,
            5 => buf = buf.get(4..).ok_or(Refusal::Malformed)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| Refusal::Malformed)?;
                if len > buf.len() {
                    return Err(Refusal::Malformed);
                }
                let (payload, rest) = buf.split_at(len);
                if let Some(child) = shape.child(key >> 3) {
                    walk(payload, child, depth, count, max)?;
                }
                buf = rest;
            }
            _ => return Err(Refusal::Malformed),
        }
    }
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Result<u64, Refusal> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Refusal::Malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Refusal::Malformed)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::{self, value::Kind};

    fn list(values: Vec<pb::Value>) -> pb::Value {
        pb::Value {
            kind: Some(Kind::ListValue(pb::ValueList { values })),
        }
    }

    fn nested(depth: usize) -> pb::Value {
        let mut v = pb::Value {
            kind: Some(Kind::IntValue(1)),
        };
        for _ in 0..depth {
            v = list(vec![v]);
        }
        v
    }

    fn scan(req: &impl Message, shape: Shape, max: usize) -> Result<usize, Refusal> {
        let mut count = 0;
        walk(&req.encode_to_vec(), shape, 0, &mut count, max).map(|()| count)
    }

    #[test]
    fn values_are_counted_on_every_path() {
        let v = list(vec![nested(0), nested(0)]);
        let put = pb::PutRequest {
            key: "k".into(),
            value: Some(v.clone()),
            ..Default::default()
        };
        assert_eq!(scan(&put, Shape::Put, 100), Ok(3));
        let batch = pb::BatchPutRequest {
            items: vec![
                pb::BatchPutItem {
                    key: "a".into(),
                    value: Some(v.clone()),
                    ..Default::default()
                };
                4
            ],
        };
        assert_eq!(scan(&batch, Shape::BatchPut, 100), Ok(12));
        let tx = pb::TransactRequest {
            ops: vec![pb::TransactOp {
                op: Some(pb::transact_op::Op::Put(put.clone())),
            }],
            request_id: String::new(),
        };
        assert_eq!(scan(&tx, Shape::Transact, 100), Ok(3));
        assert_eq!(scan(&batch, Shape::BatchPut, 11), Err(Refusal::TooMany));
    }

    #[test]
    fn nesting_is_refused_past_the_limit_and_below_prosts() {
        for (depth, ok) in [(MAX_VALUE_DEPTH, true), (MAX_VALUE_DEPTH + 1, false)] {
            let tx = pb::TransactRequest {
                ops: vec![pb::TransactOp {
                    op: Some(pb::transact_op::Op::Put(pb::PutRequest {
                        key: "k".into(),
                        value: Some(nested(depth)),
                        ..Default::default()
                    })),
                }],
                request_id: String::new(),
            };
            let scanned = scan(&tx, Shape::Transact, 1000);
            assert_eq!(scanned.is_ok(), ok, "depth {depth}: {scanned:?}");
            // What the scan lets through, prost decodes.
            if ok {
                pb::TransactRequest::decode(&tx.encode_to_vec()[..]).unwrap();
            }
        }
    }

    #[test]
    fn requests_without_values_are_not_scanned() {
        assert_eq!(Shape::of::<pb::GetRequest>(), None);
        assert_eq!(Shape::of::<pb::PutWithTtlRequest>(), Some(Shape::Put));
    }
}
