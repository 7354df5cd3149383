//! Minimal protobuf wire-format reader and writer.
//!
//! Only what the Kubernetes storage messages need: varints, length-delimited
//! fields, and skipping of every wire type (including the deprecated groups)
//! so that fields unknown to us (e.g. the retired `ObjectMeta.clusterName`,
//! field 15) are passed over the way gogo-generated `Unmarshal` does.
//!
//! The reader never allocates: it hands out sub-slices of its input, and every
//! length is checked against the bytes that remain before it is used.

use super::CodecError;

/// Protobuf wire types.
pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_START_GROUP: u8 = 3;
pub(crate) const WIRE_END_GROUP: u8 = 4;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// Deepest group nesting we follow while skipping unknown fields. Groups are
/// never produced by Kubernetes; the limit only bounds work on hostile input.
const MAX_GROUP_DEPTH: usize = 64;

/// One field header read from the input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldHeader {
    pub(crate) number: u64,
    pub(crate) wire_type: u8,
    /// Absolute offset of the tag (for error messages).
    pub(crate) offset: usize,
}

/// Cursor over one protobuf message.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Absolute offset of `buf[0]` in the outermost input, so errors point
    /// at the byte the caller handed us.
    base: usize,
    /// Message name used in errors.
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize, message: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            message,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads the next field header, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<FieldHeader>, CodecError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let offset = self.offset();
        let tag = self.read_varint()?;
        let number = tag >> 3;
        // The mask keeps the value below 8, so the narrowing cannot truncate.
        let wire_type = (tag & 0x7) as u8;
        if number == 0 || number > u64::from(u32::MAX >> 3) || wire_type == WIRE_END_GROUP {
            return Err(CodecError::InvalidTag {
                message: self.message,
                offset,
                field: number,
                wire_type,
            });
        }
        Ok(Some(FieldHeader {
            number,
            wire_type,
            offset,
        }))
    }

    /// Reads a base-128 varint (at most 10 bytes; bits past 64 are dropped as
    /// gogo's decoder does).
    pub(crate) fn read_varint(&mut self) -> Result<u64, CodecError> {
        let start = self.offset();
        let mut value: u64 = 0;
        for index in 0..10u8 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(CodecError::Truncated {
                    message: self.message,
                    offset: start,
                    needed: u64::from(index) + 1,
                    available: usize::from(index),
                });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(CodecError::MalformedVarint {
            message: self.message,
            offset: start,
        })
    }

    /// Reads the payload of a length-delimited field; returns it and its
    /// absolute offset.
    pub(crate) fn read_len_delimited(&mut self) -> Result<(&'a [u8], usize), CodecError> {
        let len_offset = self.offset();
        let len = self.read_varint()?;
        let available = self.remaining();
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= available)
            .ok_or(CodecError::Truncated {
                message: self.message,
                offset: len_offset,
                needed: len,
                available,
            })?;
        let start = self.pos;
        self.pos += len;
        Ok((&self.buf[start..start + len], self.base + start))
    }

    fn skip_bytes(&mut self, count: usize) -> Result<(), CodecError> {
        let available = self.remaining();
        if count > available {
            return Err(CodecError::Truncated {
                message: self.message,
                offset: self.offset(),
                needed: count as u64,
                available,
            });
        }
        self.pos += count;
        Ok(())
    }

    /// Skips the value of a field we do not know.
    pub(crate) fn skip(&mut self, header: FieldHeader) -> Result<(), CodecError> {
        self.skip_value(header, 0)
    }

    fn skip_value(&mut self, header: FieldHeader, depth: usize) -> Result<(), CodecError> {
        match header.wire_type {
            WIRE_VARINT => self.read_varint().map(drop),
            WIRE_FIXED64 => self.skip_bytes(8),
            WIRE_LEN => self.read_len_delimited().map(drop),
            WIRE_FIXED32 => self.skip_bytes(4),
            WIRE_START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(CodecError::TooDeep {
                        offset: header.offset,
                        limit: MAX_GROUP_DEPTH,
                    });
                }
                loop {
                    let offset = self.offset();
                    if self.pos >= self.buf.len() {
                        return Err(CodecError::Truncated {
                            message: self.message,
                            offset,
                            needed: 1,
                            available: 0,
                        });
                    }
                    let tag = self.read_varint()?;
                    let number = tag >> 3;
                    // Masked to three bits: the narrowing cannot truncate.
                    let wire_type = (tag & 0x7) as u8;
                    if wire_type == WIRE_END_GROUP {
                        if number != header.number {
                            return Err(CodecError::InvalidTag {
                                message: self.message,
                                offset,
                                field: number,
                                wire_type,
                            });
                        }
                        return Ok(());
                    }
                    if number == 0 {
                        return Err(CodecError::InvalidTag {
                            message: self.message,
                            offset,
                            field: number,
                            wire_type,
                        });
                    }
                    let inner = FieldHeader {
                        number,
                        wire_type,
                        offset,
                    };
                    self.skip_value(inner, depth + 1)?;
                }
            }
            other => Err(CodecError::InvalidTag {
                message: self.message,
                offset: header.offset,
                field: header.number,
                wire_type: other,
            }),
        }
    }

    /// Checks that `header` has the wire type a known field must have.
    pub(crate) fn expect(&self, header: FieldHeader, wire_type: u8) -> Result<(), CodecError> {
        if header.wire_type == wire_type {
            Ok(())
        } else {
            Err(CodecError::WrongWireType {
                message: self.message,
                field: header.number,
                wire_type: header.wire_type,
                offset: header.offset,
            })
        }
    }

    /// Reads a length-delimited field and checks it is UTF-8.
    pub(crate) fn read_string(&mut self, header: FieldHeader) -> Result<String, CodecError> {
        self.expect(header, WIRE_LEN)?;
        let (bytes, offset) = self.read_len_delimited()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError::InvalidUtf8 {
                message: self.message,
                field: header.number,
                offset,
            })
    }

    /// Reads a length-delimited field's raw bytes.
    pub(crate) fn read_bytes(&mut self, header: FieldHeader) -> Result<&'a [u8], CodecError> {
        self.expect(header, WIRE_LEN)?;
        Ok(self.read_len_delimited()?.0)
    }

    /// Reads a nested message and returns a reader over it.
    pub(crate) fn read_message(
        &mut self,
        header: FieldHeader,
        message: &'static str,
    ) -> Result<Reader<'a>, CodecError> {
        self.expect(header, WIRE_LEN)?;
        let (bytes, offset) = self.read_len_delimited()?;
        Ok(Reader::new(bytes, offset, message))
    }

    /// Reads a varint field as int64 (two's complement, as Go's `int64(v)`).
    pub(crate) fn read_int64(&mut self, header: FieldHeader) -> Result<i64, CodecError> {
        self.expect(header, WIRE_VARINT)?;
        // Reinterpreting the bits is exactly protobuf's int64 encoding.
        Ok(self.read_varint()? as i64)
    }

    /// Reads a varint bool (any non-zero value is true, as in gogo).
    pub(crate) fn read_bool(&mut self, header: FieldHeader) -> Result<bool, CodecError> {
        self.expect(header, WIRE_VARINT)?;
        Ok(self.read_varint()? != 0)
    }
}

/// Append-only protobuf writer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer::default()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            // Low seven bits plus the continuation bit; fits in a byte.
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        // The loop left a value below 0x80.
        self.buf.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    pub(crate) fn bytes_field(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, WIRE_LEN);
        self.varint(bytes.len() as u64);
        self.raw(bytes);
    }

    pub(crate) fn string_field(&mut self, field: u32, value: &str) {
        self.bytes_field(field, value.as_bytes());
    }

    pub(crate) fn int64_field(&mut self, field: u32, value: i64) {
        self.tag(field, WIRE_VARINT);
        // Negative numbers take ten bytes, as protobuf's int64 requires.
        self.varint(value as u64);
    }

    pub(crate) fn bool_field(&mut self, field: u32, value: bool) {
        self.tag(field, WIRE_VARINT);
        self.varint(u64::from(value));
    }
}
