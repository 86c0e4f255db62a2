//! EXIF as image generators use it: the TIFF structure inside a JPEG `APP1` segment or a WebP
//! `EXIF` chunk, read for the few text tags that carry generation settings, and written for ours.
//!
//! - AUTOMATIC1111 (and Forge) save JPEG/WebP settings with piexif:
//!   `piexif.dump({"Exif": {UserComment: UserComment.dump(infotext, encoding="unicode")}})`:
//!   a big-endian TIFF whose IFD0 only points at the Exif IFD, which holds `UserComment`
//!   (0x9286, UNDEFINED) = `b"UNICODE\0"` + the infotext in UTF-16BE.
//! - Fooocus saves through Pillow: `UserComment` (its JSON or infotext), `Software` and
//!   `MakerNote` (the scheme, `fooocus` or `a1111`) all in IFD0, as ASCII.
//! - ComfyUI's WebP saver puts `prompt:{json}` in `Model` (0x0110) and `workflow:{json}` in
//!   `Make` (0x010F).
//!
//! The reader follows the TIFF 6.0 and EXIF 2.3 layouts in either byte order. It never trusts a
//! count or an offset: every value is bounds-checked, an IFD is visited once (loops end), the
//! entry count is cut to what the data can hold, and only IFD0 and the Exif IFD are read, so the
//! work is linear in the input.

/// `ImageDescription` (ASCII).
pub const TAG_IMAGE_DESCRIPTION: u16 = 0x010E;
/// `Make` (ASCII); ComfyUI's WebP `workflow:{json}`.
pub const TAG_MAKE: u16 = 0x010F;
/// `Model` (ASCII); ComfyUI's WebP `prompt:{json}`.
pub const TAG_MODEL: u16 = 0x0110;
/// `Software` (ASCII).
pub const TAG_SOFTWARE: u16 = 0x0131;
/// `Artist` (ASCII).
pub const TAG_ARTIST: u16 = 0x013B;
/// Pointer to the Exif IFD (LONG or IFD).
pub const TAG_EXIF_IFD: u16 = 0x8769;
/// `UserComment` (UNDEFINED, 8-byte character-code prefix).
pub const TAG_USER_COMMENT: u16 = 0x9286;
/// `MakerNote` (UNDEFINED); Fooocus' metadata scheme name.
pub const TAG_MAKER_NOTE: u16 = 0x927C;
/// Windows `XPComment` (BYTE, UTF-16LE).
pub const TAG_XP_COMMENT: u16 = 0x9C9C;

/// The prefix JPEG files put before the TIFF data in their `APP1` segment.
pub const JPEG_EXIF_HEADER: &[u8; 6] = b"Exif\0\0";

/// `UserComment` character codes (EXIF 2.3, table 9).
const PREFIX_ASCII: &[u8; 8] = b"ASCII\0\0\0";
const PREFIX_UNICODE: &[u8; 8] = b"UNICODE\0";
const PREFIX_JIS: &[u8; 8] = b"JIS\0\0\0\0\0";
const PREFIX_UNDEFINED: &[u8; 8] = &[0; 8];

/// Tags read as text, and in which IFD they are looked for.
const TEXT_TAGS: [u16; 8] = [
    TAG_IMAGE_DESCRIPTION,
    TAG_MAKE,
    TAG_MODEL,
    TAG_SOFTWARE,
    TAG_ARTIST,
    TAG_USER_COMMENT,
    TAG_MAKER_NOTE,
    TAG_XP_COMMENT,
];

/// A maker note longer than this is camera data, not a scheme name.
const MAX_TEXT_MAKER_NOTE: usize = 256;

/// Which IFD an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ifd {
    /// IFD0, the primary image's directory.
    Primary,
    /// The Exif sub-IFD (pointed to by tag 0x8769).
    Exif,
}

/// One text tag found in the EXIF data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExifEntry {
    /// The IFD it was in.
    pub ifd: Ifd,
    /// The tag number.
    pub tag: u16,
    /// The decoded text.
    pub text: String,
}

/// The text tags of an EXIF block, plus what was odd about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExifText {
    /// Entries in the order met (IFD0 first).
    pub entries: Vec<ExifEntry>,
    /// Damage and oddities (bad offsets, cut entry counts, loops, unknown character codes).
    pub warnings: Vec<String>,
}

impl ExifText {
    /// The text of a tag in one IFD.
    pub fn get(&self, ifd: Ifd, tag: u16) -> Option<&str> {
        self.entries.iter().find(|e| e.ifd == ifd && e.tag == tag).map(|e| e.text.as_str())
    }
}

/// Why EXIF data could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExifError {
    /// No TIFF header (`II*\0` or `MM\0*`).
    #[error("not EXIF data (no TIFF header)")]
    NotTiff,
}

#[derive(Clone, Copy)]
enum ByteOrder {
    Little,
    Big,
}

struct Tiff<'a> {
    data: &'a [u8],
    order: ByteOrder,
}

impl Tiff<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let bytes: [u8; 2] = self.data.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self.order {
            ByteOrder::Little => u16::from_le_bytes(bytes),
            ByteOrder::Big => u16::from_be_bytes(bytes),
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self.order {
            ByteOrder::Little => u32::from_le_bytes(bytes),
            ByteOrder::Big => u32::from_be_bytes(bytes),
        })
    }
}

/// Bytes per value of a TIFF field type; `None` for types TIFF does not define.
fn type_size(field_type: u16) -> Option<usize> {
    match field_type {
        1 | 2 | 6 | 7 => Some(1),
        3 | 8 => Some(2),
        4 | 9 | 11 | 13 => Some(4),
        5 | 10 | 12 => Some(8),
        _ => None,
    }
}

/// Reads the text tags of EXIF data: TIFF bytes, with or without the JPEG `Exif\0\0` prefix.
///
/// # Errors
/// The data has no TIFF header. Damage after the header is not an error: what can be read is
/// returned, and `warnings` says what could not.
pub fn read_exif(data: &[u8]) -> Result<ExifText, ExifError> {
    let data = data.strip_prefix(JPEG_EXIF_HEADER).unwrap_or(data);
    let order = match data.get(..4) {
        Some(b"II*\0") => ByteOrder::Little,
        Some(b"MM\0*") => ByteOrder::Big,
        _ => return Err(ExifError::NotTiff),
    };
    let tiff = Tiff { data, order };
    let mut found = ExifText::default();
    let Some(ifd0) = tiff.u32_at(4) else {
        return Err(ExifError::NotTiff);
    };
    let mut pending = vec![(Ifd::Primary, ifd0 as usize)];
    let mut visited = Vec::new();
    while let Some((ifd, offset)) = pending.pop() {
        if visited.contains(&offset) {
            found.warnings.push(format!("EXIF IFD at byte {offset} is referenced twice (a loop)"));
            continue;
        }
        visited.push(offset);
        if let Some(exif_ifd) = read_ifd(&tiff, ifd, offset, &mut found)
            && ifd == Ifd::Primary
        {
            pending.push((Ifd::Exif, exif_ifd));
        }
    }
    Ok(found)
}

/// Reads one IFD's text tags into `found`; returns the Exif IFD offset when IFD0 points to one.
fn read_ifd(tiff: &Tiff<'_>, ifd: Ifd, offset: usize, found: &mut ExifText) -> Option<usize> {
    let Some(declared) = tiff.u16_at(offset) else {
        found.warnings.push(format!("EXIF IFD offset {offset} is outside the data"));
        return None;
    };
    let first_entry = offset + 2;
    let room = tiff.data.len().saturating_sub(first_entry) / 12;
    let count = usize::from(declared).min(room);
    if count < usize::from(declared) {
        found.warnings.push(format!(
            "EXIF IFD at byte {offset} declares {declared} entries, only {count} fit in the data"
        ));
    }
    let mut exif_ifd = None;
    for index in 0..count {
        let at = first_entry + index * 12;
        let (Some(tag), Some(field_type), Some(values)) =
            (tiff.u16_at(at), tiff.u16_at(at + 2), tiff.u32_at(at + 4))
        else {
            break;
        };
        if tag == TAG_EXIF_IFD && ifd == Ifd::Primary {
            match tiff.u32_at(at + 8) {
                Some(pointer) if matches!(field_type, 4 | 13) && values == 1 => {
                    exif_ifd = Some(pointer as usize);
                }
                _ => found.warnings.push("EXIF IFD pointer is malformed; ignored".to_owned()),
            }
            continue;
        }
        if !TEXT_TAGS.contains(&tag) {
            continue;
        }
        let Some(size) = type_size(field_type).and_then(|s| s.checked_mul(values as usize)) else {
            found.warnings.push(format!("EXIF tag 0x{tag:04X} has unknown type {field_type}"));
            continue;
        };
        let value = if size <= 4 {
            tiff.data.get(at + 8..at + 8 + size)
        } else {
            tiff.u32_at(at + 8).and_then(|start| {
                let start = start as usize;
                tiff.data.get(start..start.checked_add(size)?)
            })
        };
        let Some(value) = value else {
            found.warnings.push(format!(
                "EXIF tag 0x{tag:04X} points outside the data ({size} bytes); skipped"
            ));
            continue;
        };
        let text = match tag {
            TAG_USER_COMMENT => Some(decode_user_comment(value, tiff.order, field_type, found)),
            TAG_XP_COMMENT => Some(decode_utf16(value, false)),
            TAG_MAKER_NOTE => decode_short_text(value),
            _ => Some(decode_ascii(value)),
        };
        if let Some(text) = text {
            found.entries.push(ExifEntry { ifd, tag, text });
        }
    }
    exif_ifd
}

/// `UserComment`: an 8-byte character code, then the text. Pillow writes a plain ASCII string
/// (Fooocus) without one; that is read as text.
fn decode_user_comment(
    value: &[u8],
    order: ByteOrder,
    field_type: u16,
    found: &mut ExifText,
) -> String {
    let Some((prefix, body)) = value.split_first_chunk::<8>().filter(|_| field_type != 2) else {
        return decode_ascii(value);
    };
    if prefix == PREFIX_UNICODE {
        decode_unicode_comment(body, order)
    } else if prefix == PREFIX_ASCII || prefix == PREFIX_UNDEFINED {
        decode_ascii(body)
    } else if prefix == PREFIX_JIS {
        found.warnings.push(
            "EXIF UserComment is in JIS (Shift_JIS); read as UTF-8 where possible".to_owned(),
        );
        decode_ascii(body)
    } else {
        // piexif raises here and A1111 then reads the whole value as UTF-8: do the same.
        decode_ascii(value)
    }
}

/// UCS-2/UTF-16 text of a `UNICODE` comment. piexif always writes big-endian; tools that follow
/// the file's byte order (exiftool) write little-endian into `II` files. A byte-order mark
/// decides; else the side where ASCII's zero bytes fall; else the file's byte order.
fn decode_unicode_comment(body: &[u8], order: ByteOrder) -> String {
    match body {
        [0xFE, 0xFF, rest @ ..] => return decode_utf16(rest, true),
        [0xFF, 0xFE, rest @ ..] => return decode_utf16(rest, false),
        _ => {}
    }
    let pairs = body.chunks_exact(2);
    let (zero_high, zero_low) = pairs.fold((0usize, 0usize), |(high, low), pair| {
        (
            high + usize::from(pair[0] == 0 && pair[1] != 0),
            low + usize::from(pair[1] == 0 && pair[0] != 0),
        )
    });
    let big_endian = match zero_high.cmp(&zero_low) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => matches!(order, ByteOrder::Big),
    };
    decode_utf16(body, big_endian)
}

/// UTF-16 (lone surrogates replaced), trailing NULs dropped; an odd last byte is ignored.
fn decode_utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|pair| {
        if big_endian {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_le_bytes([pair[0], pair[1]])
        }
    });
    let text: String =
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
    text.trim_end_matches('\0').to_owned()
}

/// ASCII tags up to the first NUL. Many tools write UTF-8 there: valid UTF-8 is read as such,
/// anything else as Latin-1.
fn decode_ascii(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// A maker note that is short printable UTF-8 (Fooocus' scheme name); camera data is skipped.
fn decode_short_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_TEXT_MAKER_NOTE {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?.trim_end_matches('\0');
    (!text.is_empty() && text.chars().all(|c| !c.is_control() || c.is_whitespace()))
        .then(|| text.to_owned())
}

/// A `UserComment` value as piexif's `UserComment.dump(text, encoding="unicode")` makes it.
pub fn unicode_user_comment(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + text.len() * 2);
    out.extend_from_slice(PREFIX_UNICODE);
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// The EXIF block of our JPEG and WebP files (TIFF bytes, without the JPEG prefix), laid out
/// as piexif lays out A1111's: big-endian; IFD0 holds `Software` and the Exif IFD pointer; the
/// Exif IFD holds `UserComment` = `UNICODE\0` + UTF-16BE infotext.
pub fn build_exif(user_comment: &str, software: &str) -> Vec<u8> {
    const IFD0: usize = 8;
    const IFD0_ENTRIES: u16 = 2;
    const EXIF_ENTRIES: u16 = 1;
    let exif_ifd = IFD0 + 2 + usize::from(IFD0_ENTRIES) * 12 + 4;
    let data_start = exif_ifd + 2 + usize::from(EXIF_ENTRIES) * 12 + 4;
    let mut software_bytes: Vec<u8> = software.bytes().filter(|b| *b != 0).collect();
    software_bytes.push(0);
    let comment = unicode_user_comment(user_comment);
    let software_at = data_start;
    let comment_at = software_at + software_bytes.len() + software_bytes.len() % 2;

    let mut out = Vec::with_capacity(comment_at + comment.len());
    out.extend_from_slice(b"MM\0*");
    push_u32(&mut out, IFD0);
    // IFD0: Software, ExifIFD pointer (ascending tags); no next IFD.
    out.extend_from_slice(&IFD0_ENTRIES.to_be_bytes());
    push_entry(&mut out, TAG_SOFTWARE, 2, software_bytes.len(), software_at);
    push_entry(&mut out, TAG_EXIF_IFD, 4, 1, exif_ifd);
    push_u32(&mut out, 0);
    // Exif IFD: UserComment.
    out.extend_from_slice(&EXIF_ENTRIES.to_be_bytes());
    push_entry(&mut out, TAG_USER_COMMENT, 7, comment.len(), comment_at);
    push_u32(&mut out, 0);
    debug_assert_eq!(out.len(), data_start);
    out.extend_from_slice(&software_bytes);
    if software_bytes.len() % 2 == 1 {
        out.push(0);
    }
    out.extend_from_slice(&comment);
    out
}

fn push_u32(out: &mut Vec<u8>, value: usize) {
    // Offsets and counts of our own small blocks; a block over 4 GiB is never built.
    out.extend_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_be_bytes());
}

/// One IFD entry; values of four bytes or less are stored in the entry itself.
fn push_entry(out: &mut Vec<u8>, tag: u16, field_type: u16, count: usize, value_or_offset: usize) {
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&field_type.to_be_bytes());
    push_u32(out, count);
    push_u32(out, value_or_offset);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// piexif 1.1.3's `dump({"Exif": {UserComment: UserComment.dump("a cat, 猫\nSteps: 20",
    /// encoding="unicode")}})`, byte for byte (printed by Python).
    const PIEXIF_DUMP: &[u8] = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x87i\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a\x00\x00\x00\x00\x00\x01\x92\x86\x00\x07\x00\x00\x00,\x00\x00\x00(UNICODE\x00\x00a\x00 \x00c\x00a\x00t\x00,\x00 s+\x00\n\x00S\x00t\x00e\x00p\x00s\x00:\x00 \x002\x000";

    #[test]
    fn reads_piexif_unicode_user_comment() {
        // The dump above ends after its data (piexif pads nothing); offsets hold.
        let found = read_exif(PIEXIF_DUMP).expect("tiff");
        assert_eq!(found.get(Ifd::Exif, TAG_USER_COMMENT), Some("a cat, 猫\nSteps: 20"));
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }

    #[test]
    fn our_block_reads_back_and_matches_piexif_layout() {
        let block = build_exif("a cat, 猫\nSteps: 20", "imagelab 0.1.0");
        let found = read_exif(&block).expect("tiff");
        assert_eq!(found.get(Ifd::Exif, TAG_USER_COMMENT), Some("a cat, 猫\nSteps: 20"));
        assert_eq!(found.get(Ifd::Primary, TAG_SOFTWARE), Some("imagelab 0.1.0"));
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        // The comment value is exactly piexif's.
        let comment = unicode_user_comment("a cat, 猫\nSteps: 20");
        assert!(PIEXIF_DUMP.ends_with(&comment));
        assert!(block.ends_with(&comment));
    }

    fn len32(bytes: &[u8]) -> u32 {
        u32::try_from(bytes.len()).expect("small")
    }

    /// Builds a little-endian TIFF by hand: IFD0 with the given entries (tag, type, count, data).
    fn little_endian_tiff(entries: &[(u16, u16, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&u16::try_from(entries.len()).expect("count").to_le_bytes());
        let mut data_at = 8 + 2 + entries.len() * 12 + 4;
        let mut data = Vec::new();
        for (tag, field_type, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&field_type.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if value.len() <= 4 {
                let mut inline = value.clone();
                inline.resize(4, 0);
                out.extend_from_slice(&inline);
            } else {
                out.extend_from_slice(&u32::try_from(data_at).expect("offset").to_le_bytes());
                data.extend_from_slice(value);
                data_at += value.len();
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn little_endian_files_and_le_unicode_comments() {
        // exiftool writes UNICODE comments in the file's byte order.
        let mut comment = PREFIX_UNICODE.to_vec();
        for unit in "Steps: 20, Seed: 1".encode_utf16() {
            comment.extend_from_slice(&unit.to_le_bytes());
        }
        let tiff = little_endian_tiff(&[
            (TAG_SOFTWARE, 2, 5, b"tool\0".to_vec()),
            (TAG_USER_COMMENT, 7, len32(&comment), comment),
        ]);
        let found = read_exif(&tiff).expect("tiff");
        assert_eq!(found.get(Ifd::Primary, TAG_USER_COMMENT), Some("Steps: 20, Seed: 1"));
        assert_eq!(found.get(Ifd::Primary, TAG_SOFTWARE), Some("tool"));
        // A BOM overrides the guess; CJK-only text falls back to the file's order.
        let mut bom = PREFIX_UNICODE.to_vec();
        bom.extend_from_slice(&[0xFE, 0xFF, 0x73, 0x2B]);
        assert_eq!(decode_unicode_comment(&bom[8..], ByteOrder::Little), "猫");
        assert_eq!(decode_unicode_comment(&[0x2B, 0x73], ByteOrder::Little), "猫");
        assert_eq!(decode_unicode_comment(&[0x73, 0x2B], ByteOrder::Big), "猫");
    }

    #[test]
    fn fooocus_pillow_layout_in_ifd0() {
        // Pillow's Exif() with str values (Fooocus' get_exif): ASCII tags in IFD0, no prefix.
        let tiff = little_endian_tiff(&[
            (TAG_SOFTWARE, 2, 15, b"Fooocus v2.5.5\0".to_vec()),
            (TAG_USER_COMMENT, 2, 11, b"{\"a\": \"b\"}\0".to_vec()),
            (TAG_MAKER_NOTE, 2, 8, b"fooocus\0".to_vec()),
        ]);
        let found = read_exif(&tiff).expect("tiff");
        assert_eq!(found.get(Ifd::Primary, TAG_USER_COMMENT), Some("{\"a\": \"b\"}"));
        assert_eq!(found.get(Ifd::Primary, TAG_MAKER_NOTE), Some("fooocus"));
        // Binary camera maker notes are not text.
        let tiff = little_endian_tiff(&[(TAG_MAKER_NOTE, 7, 6, vec![0, 1, 2, 0xFF, 4, 5])]);
        assert!(read_exif(&tiff).expect("tiff").entries.is_empty());
    }

    #[test]
    fn other_character_codes() {
        let mut ascii = PREFIX_ASCII.to_vec();
        ascii.extend_from_slice("Käse".as_bytes());
        let tiff = little_endian_tiff(&[(TAG_USER_COMMENT, 7, len32(&ascii), ascii)]);
        assert_eq!(
            read_exif(&tiff).expect("tiff").get(Ifd::Primary, TAG_USER_COMMENT),
            Some("Käse")
        );
        // Unknown prefix: the whole value as UTF-8, as A1111 falls back to.
        let odd = b"prompt text, more".to_vec();
        let tiff = little_endian_tiff(&[(TAG_USER_COMMENT, 7, len32(&odd), odd)]);
        assert_eq!(
            read_exif(&tiff).expect("tiff").get(Ifd::Primary, TAG_USER_COMMENT),
            Some("prompt text, more")
        );
    }

    #[test]
    fn loops_huge_counts_and_bad_offsets_are_warnings() {
        // IFD0's Exif pointer points back at IFD0.
        let tiff = little_endian_tiff(&[(TAG_EXIF_IFD, 4, 1, 8u32.to_le_bytes().to_vec())]);
        let found = read_exif(&tiff).expect("tiff");
        assert!(found.warnings.iter().any(|w| w.contains("loop")), "{:?}", found.warnings);
        // 65535 declared entries in a tiny block.
        let mut tiff = little_endian_tiff(&[(TAG_SOFTWARE, 2, 3, b"ab\0".to_vec())]);
        tiff[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        let found = read_exif(&tiff).expect("tiff");
        assert_eq!(found.get(Ifd::Primary, TAG_SOFTWARE), Some("ab"));
        assert!(found.warnings[0].contains("65535"), "{:?}", found.warnings);
        // A value whose count * size overflows or runs past the end.
        let tiff =
            little_endian_tiff(&[(TAG_USER_COMMENT, 12, u32::MAX, 4000u32.to_le_bytes().to_vec())]);
        let found = read_exif(&tiff).expect("tiff");
        assert!(found.entries.is_empty());
        assert!(found.warnings[0].contains("outside"), "{:?}", found.warnings);
        // IFD0 offset beyond the data.
        let mut tiff = little_endian_tiff(&[]);
        tiff[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(read_exif(&tiff).expect("tiff").warnings[0].contains("outside"));
        assert_eq!(read_exif(b"JFIF"), Err(ExifError::NotTiff));
        assert_eq!(read_exif(b"MM\0*\0\0"), Err(ExifError::NotTiff));
    }

    #[test]
    fn every_truncation_is_handled() {
        let block = build_exif("Steps: 20", "imagelab");
        for cut in 0..block.len() {
            if let Ok(found) = read_exif(&block[..cut]) {
                assert!(found.get(Ifd::Exif, TAG_USER_COMMENT).is_none() || cut == block.len());
            }
        }
    }
}
