//! `TFRecord` framing of event files: `u64` length (little-endian), masked CRC-32C of the length,
//! the payload, masked CRC-32C of the payload.

use std::io::{Read, Write};

const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C TensorFlow stores, so that CRCs of data holding CRCs stay well mixed.
#[must_use]
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Writes one framed record.
///
/// # Errors
/// The writer's I/O error.
pub fn write_record(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = (payload.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc(&len).to_le_bytes())?;
    out.write_all(payload)?;
    out.write_all(&masked_crc(payload).to_le_bytes())
}

/// What reading one record gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A whole record whose checksums match.
    Record(Vec<u8>),
    /// A clean end of file between records.
    End,
    /// The file ends inside a record (a writer was interrupted).
    Truncated,
    /// A checksum does not match: the data is corrupt.
    Corrupt(&'static str),
}

/// Reads the next framed record.
///
/// # Errors
/// The reader's I/O errors other than an early end of file.
pub fn read_record(input: &mut impl Read) -> std::io::Result<ReadOutcome> {
    let mut header = [0u8; 12];
    match read_full(input, &mut header)? {
        0 => return Ok(ReadOutcome::End),
        12 => {}
        _ => return Ok(ReadOutcome::Truncated),
    }
    let (len_bytes, crc_bytes) = header.split_at(8);
    if masked_crc(len_bytes) != u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default()) {
        return Ok(ReadOutcome::Corrupt("length checksum mismatch"));
    }
    let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    let Ok(len) = usize::try_from(len) else {
        return Ok(ReadOutcome::Corrupt("record length too large"));
    };
    let mut payload = vec![0u8; len];
    if read_full(input, &mut payload)? != len {
        return Ok(ReadOutcome::Truncated);
    }
    let mut crc = [0u8; 4];
    if read_full(input, &mut crc)? != 4 {
        return Ok(ReadOutcome::Truncated);
    }
    if masked_crc(&payload) != u32::from_le_bytes(crc) {
        return Ok(ReadOutcome::Corrupt("payload checksum mismatch"));
    }
    Ok(ReadOutcome::Record(payload))
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard CRC-32C check value of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trip_truncation_and_corruption() {
        let mut buf = Vec::new();
        write_record(&mut buf, b"hello").unwrap();
        write_record(&mut buf, b"world!").unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_record(&mut r).unwrap(),
            ReadOutcome::Record(b"hello".to_vec())
        );
        assert_eq!(
            read_record(&mut r).unwrap(),
            ReadOutcome::Record(b"world!".to_vec())
        );
        assert_eq!(read_record(&mut r).unwrap(), ReadOutcome::End);

        let mut r = &buf[..buf.len() - 2];
        read_record(&mut r).unwrap();
        assert_eq!(read_record(&mut r).unwrap(), ReadOutcome::Truncated);

        let mut bad = buf.clone();
        bad[14] ^= 1;
        assert!(matches!(
            read_record(&mut bad.as_slice()).unwrap(),
            ReadOutcome::Corrupt(_)
        ));
    }
}
