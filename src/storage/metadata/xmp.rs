//! XMP packets (Adobe's RDF/XML metadata) in JPEG `APP1` segments and WebP `XMP ` chunks: the
//! simple properties of every `rdf:Description` are read by namespace and name, and ours is
//! written with the complete request as JSON.
//!
//! A property is an attribute of `rdf:Description` or a child element of it; a language
//! alternative or list (`rdf:Alt`, `rdf:Seq`, `rdf:Bag`) gives its `x-default` item or else its
//! first. Prefixes are resolved through `xmlns` declarations, so `exif:UserComment` is found
//! whatever prefix a tool chose. The parser is quick-xml's; nesting and the number of
//! properties are capped, and text can only be as large as the packet.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// RDF's namespace.
pub const NS_RDF: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
/// Dublin Core (`dc:description`).
pub const NS_DC: &str = "http://purl.org/dc/elements/1.1/";
/// EXIF properties in XMP (`exif:UserComment`).
pub const NS_EXIF: &str = "http://ns.adobe.com/exif/1.0/";
/// XMP basic (`xmp:CreatorTool`).
pub const NS_XMP: &str = "http://ns.adobe.com/xap/1.0/";
/// Ours: `imagelab:generation` holds the complete request as JSON.
pub const NS_IMAGELAB: &str = "urn:imagelab:xmp:1.0:";
/// The local name of our property.
pub const GENERATION_PROPERTY: &str = "generation";

/// The signature before an XMP packet in a JPEG `APP1` segment.
pub const JPEG_XMP_HEADER: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// Deeper nesting than this is not XMP that any generator writes; reading stops there.
const MAX_DEPTH: usize = 64;
/// More properties than this are not read.
const MAX_PROPERTIES: usize = 4096;

/// One simple property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmpProperty {
    /// Namespace URI.
    pub namespace: String,
    /// Local name (`UserComment`, `description`, `generation`…).
    pub name: String,
    /// The value (for alternatives and lists: the `x-default` or first item).
    pub value: String,
}

/// The properties of a packet, plus what was odd about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmpProperties {
    /// Properties in document order.
    pub properties: Vec<XmpProperty>,
    /// Malformed XML, unknown entities, limits reached.
    pub warnings: Vec<String>,
}

impl XmpProperties {
    /// The first property with this namespace and local name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .map(|p| p.value.as_str())
    }
}

/// Text of the packet: UTF-8, or UTF-16 with a byte-order mark (XMP allows both).
fn packet_text(packet: &[u8]) -> String {
    let utf16 = |bytes: &[u8], big: bool| -> String {
        let units = bytes.chunks_exact(2).map(|p| {
            if big { u16::from_be_bytes([p[0], p[1]]) } else { u16::from_le_bytes([p[0], p[1]]) }
        });
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
    };
    match packet {
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => String::from_utf8_lossy(packet).into_owned(),
    }
}

/// One element on the open-element stack.
struct Open {
    rdf_local: Option<String>,
}

/// A property being read (a child element of `rdf:Description`).
struct PropertyInProgress {
    namespace: String,
    name: String,
    depth: usize,
    text: String,
    items: Vec<(bool, String)>,
    item: Option<(bool, String, usize)>,
}

/// The reading state: open elements, open `rdf:Description`s, the property being read.
#[derive(Default)]
struct Walk {
    found: XmpProperties,
    stack: Vec<Open>,
    descriptions: Vec<usize>,
    property: Option<PropertyInProgress>,
}

/// An element's name and its property attributes, resolved.
struct Element {
    namespace: String,
    local: String,
    lang_default: bool,
    attributes: Vec<(String, String, String)>,
}

fn element_of(reader: &NsReader<&[u8]>, start: &quick_xml::events::BytesStart<'_>) -> Element {
    let (namespace, local) = resolve(reader, start.name(), true);
    let mut element = Element { namespace, local, lang_default: false, attributes: Vec::new() };
    let mut raw_attributes = start.attributes();
    raw_attributes.with_checks(false);
    for attribute in raw_attributes.flatten() {
        let (attr_ns, attr_local) = resolve(reader, attribute.key, false);
        let value = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_or_else(
            |_| String::from_utf8_lossy(&attribute.value).into_owned(),
            std::borrow::Cow::into_owned,
        );
        if attribute.key.as_ref() == b"xml:lang" {
            element.lang_default = value == "x-default";
        }
        if !attr_ns.is_empty() && attr_ns != NS_RDF && !is_xmlns(attribute.key) {
            element.attributes.push((attr_ns, attr_local, value));
        }
    }
    element
}

impl Walk {
    /// An opening (or empty) element.
    fn open(&mut self, element: Element, is_empty: bool) {
        let rdf_local = (element.namespace == NS_RDF).then(|| element.local.clone());
        let depth = self.stack.len();
        if rdf_local.as_deref() == Some("Description") {
            for (namespace, name, value) in element.attributes {
                push_property(&mut self.found, XmpProperty { namespace, name, value });
            }
            if !is_empty {
                self.descriptions.push(depth);
            }
        } else if let Some(prop) = self.property.as_mut() {
            if rdf_local.as_deref() == Some("li") && prop.item.is_none() {
                if is_empty {
                    prop.items.push((element.lang_default, String::new()));
                } else {
                    prop.item = Some((element.lang_default, String::new(), depth));
                }
            }
        } else if self.descriptions.last().is_some_and(|&d| d + 1 == depth) && !is_empty {
            self.property = Some(PropertyInProgress {
                namespace: element.namespace,
                name: element.local,
                depth,
                text: String::new(),
                items: Vec::new(),
                item: None,
            });
        }
        if !is_empty {
            self.stack.push(Open { rdf_local });
        }
    }

    /// A closing element (quick-xml has checked that it matches an open one).
    fn close(&mut self) {
        let Some(open) = self.stack.pop() else { return };
        let depth = self.stack.len();
        let mut finished = false;
        if let Some(prop) = self.property.as_mut() {
            if let Some((default, text, item_depth)) = prop.item.take() {
                if item_depth == depth {
                    prop.items.push((default, text));
                } else {
                    prop.item = Some((default, text, item_depth));
                }
            }
            finished = prop.depth == depth;
        }
        if finished && let Some(done) = self.property.take() {
            let value = done
                .items
                .iter()
                .find(|(default, _)| *default)
                .or_else(|| done.items.first())
                .map_or(done.text, |(_, text)| text.clone());
            push_property(
                &mut self.found,
                XmpProperty { namespace: done.namespace, name: done.name, value },
            );
        }
        if open.rdf_local.as_deref() == Some("Description")
            && self.descriptions.last() == Some(&depth)
        {
            self.descriptions.pop();
        }
    }

    fn text(&mut self, text: &str) {
        if let Some(prop) = self.property.as_mut() {
            match prop.item.as_mut() {
                Some((_, item, _)) => item.push_str(text),
                None => prop.text.push_str(text),
            }
        }
    }

    /// `&name;` or `&#N;` in text.
    fn reference(&mut self, reference: &quick_xml::events::BytesRef<'_>) {
        let resolved = match reference.resolve_char_ref() {
            Ok(Some(c)) => Some(c.to_string()),
            Ok(None) => match &**reference {
                b"lt" => Some("<".to_owned()),
                b"gt" => Some(">".to_owned()),
                b"amp" => Some("&".to_owned()),
                b"apos" => Some("'".to_owned()),
                b"quot" => Some("\"".to_owned()),
                _ => None,
            },
            Err(_) => None,
        };
        let text = resolved.unwrap_or_else(|| {
            let name = String::from_utf8_lossy(reference).into_owned();
            self.found.warnings.push(format!("XMP uses an unknown entity &{name}; kept as is"));
            format!("&{name};")
        });
        self.text(&text);
    }
}

/// Reads every simple property of an XMP packet (with or without its `<?xpacket?>` wrapper).
///
/// Never fails: malformed XML ends the reading with a warning, keeping what came before.
pub fn read_xmp(packet: &[u8]) -> XmpProperties {
    let text = packet_text(packet);
    let mut reader = NsReader::from_str(&text);
    let mut walk = Walk::default();
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(err) => {
                walk.found.warnings.push(format!(
                    "XMP packet is malformed at byte {} ({err}); read up to there",
                    reader.error_position()
                ));
                break;
            }
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if walk.stack.len() >= MAX_DEPTH {
                    walk.found.warnings.push(format!("XMP nests deeper than {MAX_DEPTH}; stopped"));
                    break;
                }
                let is_empty = matches!(event, Event::Empty(_));
                walk.open(element_of(&reader, start), is_empty);
            }
            Event::End(_) => walk.close(),
            Event::Text(ref text) => walk.text(&text.xml10_content().unwrap_or_default()),
            Event::CData(ref data) => walk.text(&String::from_utf8_lossy(data)),
            Event::GeneralRef(ref reference) => walk.reference(reference),
            Event::Eof => break,
            _ => {}
        }
        if walk.found.properties.len() >= MAX_PROPERTIES {
            let warning = format!("XMP holds more than {MAX_PROPERTIES} properties; stopped");
            walk.found.warnings.push(warning);
            break;
        }
    }
    walk.found
}

fn is_xmlns(key: QName<'_>) -> bool {
    key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:")
}

fn resolve(reader: &NsReader<&[u8]>, name: QName<'_>, element: bool) -> (String, String) {
    let resolver = reader.resolver();
    let (namespace, local) =
        if element { resolver.resolve_element(name) } else { resolver.resolve_attribute(name) };
    let namespace = match namespace {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        ResolveResult::Unbound | ResolveResult::Unknown(_) => String::new(),
    };
    (namespace, String::from_utf8_lossy(local.as_ref()).into_owned())
}

fn push_property(found: &mut XmpProperties, property: XmpProperty) {
    if found.properties.len() < MAX_PROPERTIES {
        found.properties.push(property);
    }
}

/// JSON as XML 1.0 can carry it: U+FFFE and U+FFFF, which XML cannot hold even as character
/// references, become `\\uXXXX` escapes (JSON only produces them inside strings, where the
/// escape keeps the value); everything else stays as it is, so the packet stays small.
pub fn xml_safe_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '\u{fffe}' | '\u{ffff}') {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn escape_xml_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Our XMP packet: `imagelab:generation` = the request as (ASCII) JSON.
pub fn build_xmp(generation_json: &str, creator_tool: &str) -> String {
    let json = escape_xml_text(&xml_safe_json(generation_json));
    let tool = escape_xml_text(&xml_safe_json(creator_tool));
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n \
         <rdf:RDF xmlns:rdf=\"{NS_RDF}\">\n  \
         <rdf:Description rdf:about=\"\" xmlns:xmp=\"{NS_XMP}\" xmlns:imagelab=\"{NS_IMAGELAB}\">\n   \
         <xmp:CreatorTool>{tool}</xmp:CreatorTool>\n   \
         <imagelab:{GENERATION_PROPERTY}>{json}</imagelab:{GENERATION_PROPERTY}>\n  \
         </rdf:Description>\n \
         </rdf:RDF>\n\
         </x:xmpmeta>\n\
         <?xpacket end=\"w\"?>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_round_trips_including_odd_characters() {
        let json = serde_json::json!({"prompt": "a <cat> & \"dog\", 猫 😀 \u{ffff}", "seed": 1})
            .to_string();
        assert!(json.contains('\u{ffff}'), "serde_json keeps it raw: {json}");
        let packet = build_xmp(&json, "imagelab 0.1.0");
        // XML cannot carry U+FFFF: it is escaped.
        assert!(!packet.contains('\u{ffff}') && packet.contains("\\uffff"));
        let found = read_xmp(packet.as_bytes());
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        let back = found.get(NS_IMAGELAB, GENERATION_PROPERTY).expect("ours");
        let value: serde_json::Value = serde_json::from_str(back).expect("json");
        let original: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value, original);
        assert_eq!(found.get(NS_XMP, "CreatorTool"), Some("imagelab 0.1.0"));
    }

    #[test]
    fn attributes_alternatives_and_other_prefixes() {
        let packet = r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description rdf:about="" xmlns:e="http://ns.adobe.com/exif/1.0/"
   xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="Some &amp; Tool">
  <e:UserComment><rdf:Alt><rdf:li xml:lang="de">nein</rdf:li>
    <rdf:li xml:lang="x-default">a cat&#10;Steps: 20, Sampler: Euler</rdf:li></rdf:Alt></e:UserComment>
 </rdf:Description>
 <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:description><rdf:Alt><rdf:li xml:lang="x-default"><![CDATA[a <b> c]]></rdf:li></rdf:Alt></dc:description>
  <dc:subject><rdf:Bag><rdf:li>one</rdf:li><rdf:li>two</rdf:li></rdf:Bag></dc:subject>
 </rdf:Description>
</rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#;
        let found = read_xmp(packet.as_bytes());
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
        assert_eq!(found.get(NS_XMP, "CreatorTool"), Some("Some & Tool"));
        assert_eq!(found.get(NS_EXIF, "UserComment"), Some("a cat\nSteps: 20, Sampler: Euler"));
        assert_eq!(found.get(NS_DC, "description"), Some("a <b> c"));
        assert_eq!(found.get(NS_DC, "subject"), Some("one"));
    }

    #[test]
    fn malformed_and_hostile_packets_end_with_warnings() {
        let cut = build_xmp("{\"seed\": 1}", "t");
        for end in 0..cut.len() {
            if !cut.is_char_boundary(end) {
                continue;
            }
            let _ = read_xmp(&cut.as_bytes()[..end]);
        }
        let deep =
            format!("<rdf:RDF xmlns:rdf=\"{NS_RDF}\">{}", "<rdf:Description>".repeat(10_000));
        let found = read_xmp(deep.as_bytes());
        assert!(found.warnings.iter().any(|w| w.contains("deeper")), "{:?}", found.warnings);
        let unknown = format!(
            "<rdf:RDF xmlns:rdf=\"{NS_RDF}\"><rdf:Description xmlns:a=\"urn:a\"><a:b>x&bogus;y</a:b>\
             </rdf:Description></rdf:RDF>"
        );
        let found = read_xmp(unknown.as_bytes());
        assert_eq!(found.get("urn:a", "b"), Some("x&bogus;y"));
        assert!(found.warnings[0].contains("bogus"), "{:?}", found.warnings);
        let broken = read_xmp(b"<a><b></a>");
        assert!(broken.properties.is_empty());
        assert!(!broken.warnings.is_empty());
        // UTF-16 packets (with a BOM) are read too.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(build_xmp("{}", "t").encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(read_xmp(&utf16).get(NS_IMAGELAB, GENERATION_PROPERTY), Some("{}"));
    }
}
