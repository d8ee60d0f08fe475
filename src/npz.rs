//! NumPy `.npz` files written as a stream: a ZIP archive of stored (uncompressed) `.npy` members,
//! each followed by a data descriptor, so a member's bytes can be sent while they are produced
//! and its CRC is known only at its end. `numpy.load` reads it like any `np.savez` file.

/// Writes the framing of an `.npz` stream; the caller sends the members' bytes in between and
/// passes them through [`NpzWriter::data`].
#[derive(Default)]
pub struct NpzWriter {
    offset: u64,
    done: Vec<Member>,
    open: Option<Member>,
}

struct Member {
    name: String,
    offset: u64,
    crc: crc32fast::Hasher,
    size: u64,
}

/// The `.npy` header of an array of `descr` (`|u1`, `<i8`, `<f4` ...) with C order and `shape`,
/// padded so the data starts on a 64-byte boundary.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

const DOS_DATE: u16 = 0x21; // 1980-01-01: a fixed date keeps the bytes a function of the request
const FLAGS: u16 = 0x0008; // sizes and CRC in the data descriptor after the data

impl NpzWriter {
    /// Starts member `name` (`images.npy`): its local header, to send first.
    pub fn begin(&mut self, name: &str) -> Vec<u8> {
        assert!(self.open.is_none(), "end the previous member first");
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&[0; 12]); // CRC and sizes: in the descriptor
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        self.open = Some(Member { name: name.into(), offset: self.offset, crc: crc32fast::Hasher::new(), size: 0 });
        self.offset += h.len() as u64;
        h
    }

    /// Accounts for bytes of the open member that the caller sends.
    pub fn data(&mut self, bytes: &[u8]) {
        let m = self.open.as_mut().expect("begin a member first");
        m.crc.update(bytes);
        m.size += bytes.len() as u64;
        self.offset += bytes.len() as u64;
    }

    /// Ends the open member: its data descriptor, to send after its data.
    pub fn end(&mut self) -> Vec<u8> {
        let m = self.open.take().expect("begin a member first");
        let crc = m.crc.clone().finalize();
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&(m.size as u32).to_le_bytes());
        d.extend_from_slice(&(m.size as u32).to_le_bytes());
        self.offset += d.len() as u64;
        self.done.push(m);
        d
    }

    /// The central directory and its end record, to send last.
    pub fn finish(self) -> Vec<u8> {
        let mut cd = Vec::new();
        for m in &self.done {
            let crc = m.crc.clone().finalize();
            cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            cd.extend_from_slice(&20u16.to_le_bytes());
            cd.extend_from_slice(&20u16.to_le_bytes());
            cd.extend_from_slice(&FLAGS.to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&DOS_DATE.to_le_bytes());
            cd.extend_from_slice(&crc.to_le_bytes());
            cd.extend_from_slice(&(m.size as u32).to_le_bytes());
            cd.extend_from_slice(&(m.size as u32).to_le_bytes());
            cd.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
            cd.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
            cd.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            cd.extend_from_slice(&(m.offset as u32).to_le_bytes());
            cd.extend_from_slice(m.name.as_bytes());
        }
        let mut out = cd.clone();
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(self.done.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.done.len() as u16).to_le_bytes());
        out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.offset as u32).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }
}

/// The most bytes one `.npz` stream may hold: the archive uses 32-bit ZIP sizes.
pub const MAX_BYTES: u64 = u32::MAX as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_pad_to_64_bytes_and_describe_the_array() {
        let h = npy_header("|u1", &[3, 28, 28]);
        assert_eq!(h.len() % 64, 0);
        assert!(h.starts_with(b"\x93NUMPY\x01\x00"));
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.starts_with("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 28, 28), }"), "{text}");
        assert!(text.ends_with('\n'));
        let one = String::from_utf8_lossy(&npy_header("<i8", &[5])[10..]).to_string();
        assert!(one.contains("'shape': (5,)"), "{one}");
    }

    #[test]
    fn the_archive_offsets_and_crcs_add_up() {
        let mut w = NpzWriter::default();
        let mut out = w.begin("a.npy");
        for part in [&b"hello "[..], &b"world"[..]] {
            w.data(part);
            out.extend_from_slice(part);
        }
        out.extend(w.end());
        let second = out.len();
        out.extend(w.begin("b.npy"));
        w.data(b"!");
        out.push(b'!');
        out.extend(w.end());
        let tail = w.finish();
        let cd_start = out.len();
        out.extend(&tail);
        // The end record points at the central directory, which points at both local headers.
        let eocd = &out[out.len() - 22..];
        assert_eq!(&eocd[0..4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([eocd[10], eocd[11]]), 2);
        assert_eq!(u32::from_le_bytes(eocd[16..20].try_into().unwrap()) as usize, cd_start);
        let cd = &out[cd_start..];
        assert_eq!(u32::from_le_bytes(cd[16..20].try_into().unwrap()), crc32fast::hash(b"hello world"));
        assert_eq!(u32::from_le_bytes(cd[24..28].try_into().unwrap()), 11);
        let second_entry = &cd[46 + 5..];
        assert_eq!(u32::from_le_bytes(second_entry[42..46].try_into().unwrap()) as usize, second);
        assert_eq!(&out[second..second + 4], &0x0403_4b50u32.to_le_bytes());
    }
}
