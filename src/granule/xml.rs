//! Hardened XML parsing for SAFE metadata (`manifest.safe`, `MTD_MSIL*.xml`, `MTD_TL.xml`).
//!
//! Invariants:
//! - no document with a DTD is ever parsed: a `<!DOCTYPE` or `<!ENTITY` anywhere in the
//!   text is refused before parsing, and `roxmltree` runs with `allow_dtd: false` as a
//!   second line (it would otherwise accept an *empty* DOCTYPE). Sentinel-2 metadata never
//!   carries a DTD, so this costs nothing and rules out entity expansion ("billion
//!   laughs") and external entities on principle;
//! - the node count is bounded ([`NODES_LIMIT`]), so a hostile file cannot make the
//!   parser allocate without bound (the largest real `MTD_TL.xml` has ~100 k nodes);
//! - element lookups go by *local* name: the products use namespace prefixes (`n1:`)
//!   whose URIs change between processing baselines, so matching on them would break on
//!   the next baseline.

use std::path::Path;

use roxmltree::{Document, Node, ParsingOptions};

use super::GranuleError;

/// The most nodes one metadata document may have.
pub const NODES_LIMIT: u32 = 5_000_000;

/// The reason given when a document declares a DTD or entities.
pub const DTD_REFUSED: &str = "DTD/entity declarations are refused";

/// Parses `text` (the content of the file at `path`) without DTD support.
///
/// A leading byte-order mark is ignored.
///
/// # Errors
/// [`GranuleError::Xml`] naming `path`: with reason [`DTD_REFUSED`] when the document
/// declares a DTD or an entity, otherwise the parser's message with its line/column.
pub fn parse<'t>(text: &'t str, path: &Path) -> Result<Document<'t>, GranuleError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if declares_dtd(text) {
        return Err(GranuleError::Xml {
            path: path.to_path_buf(),
            reason: DTD_REFUSED.into(),
        });
    }
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
    };
    Document::parse_with_options(text, opts).map_err(|e| GranuleError::Xml {
        path: path.to_path_buf(),
        reason: match e {
            roxmltree::Error::DtdDetected | roxmltree::Error::EntityReferenceLoop(_) => {
                DTD_REFUSED.into()
            }
            other => other.to_string(),
        },
    })
}

/// Decodes `bytes` as UTF-8 (the encoding of every SAFE metadata file).
///
/// # Errors
/// [`GranuleError::Xml`] naming `path` when the bytes are not UTF-8.
pub fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, GranuleError> {
    String::from_utf8(bytes).map_err(|e| GranuleError::Xml {
        path: path.to_path_buf(),
        reason: format!("not UTF-8: {e}"),
    })
}

/// True when the text holds a DOCTYPE or ENTITY declaration (ASCII case-insensitive,
/// wherever it appears: refusing one inside a comment is an acceptable false positive).
fn declares_dtd(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"<!DOCTYPE"))
        || bytes
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b"<!ENTITY"))
}

/// True when `node` is an element whose local name (namespace prefix ignored) is `local`.
pub fn is(node: Node<'_, '_>, local: &str) -> bool {
    node.is_element() && node.tag_name().name() == local
}

/// The first element below `node` (depth-first, document order) with local name `local`.
pub fn find<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.descendants().find(|n| is(*n, local))
}

/// Every element below `node` with local name `local`, in document order.
pub fn find_all<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    local: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.descendants().filter(move |n| is(*n, local))
}

/// The direct child element of `node` with local name `local`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| is(*n, local))
}

/// The trimmed text of `node`, `None` when it has none or only whitespace.
pub fn text<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.text().map(str::trim).filter(|t| !t.is_empty())
}

/// The trimmed text of the first element below `node` named `local`.
pub fn find_text<'a>(node: Node<'a, '_>, local: &str) -> Option<&'a str> {
    find(node, local).and_then(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "MTD.xml";

    #[test]
    fn finds_elements_regardless_of_prefix() {
        let t = r#"<?xml version="1.0"?>
            <n1:Root xmlns:n1="urn:a"><n1:General_Info><A> x </A></n1:General_Info>
            <n2:B xmlns:n2="urn:b" k="1">2</n2:B><B>3</B></n1:Root>"#;
        let doc = parse(t, Path::new(P)).unwrap();
        let root = doc.root_element();
        assert_eq!(find_text(root, "A"), Some("x"));
        assert!(find(root, "General_Info").is_some());
        let bs: Vec<_> = find_all(root, "B").filter_map(text).collect();
        assert_eq!(bs, ["2", "3"]);
        assert_eq!(child(root, "B").and_then(|b| b.attribute("k")), Some("1"));
        assert!(find(root, "Missing").is_none());
    }

    #[test]
    fn refuses_any_dtd_even_empty() {
        for t in [
            "<!DOCTYPE r><r/>",
            "<?xml version=\"1.0\"?><!doctype r [<!ENTITY a \"x\">]><r>&a;</r>",
            "\u{feff}<!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r/>",
        ] {
            match parse(t, Path::new(P)) {
                Err(GranuleError::Xml { path, reason }) => {
                    assert_eq!(reason, DTD_REFUSED);
                    assert_eq!(path, Path::new(P));
                }
                other => panic!("{t:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_xml_names_the_file() {
        let err = parse("<a><b></a>", Path::new("x/MTD_TL.xml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x/MTD_TL.xml"), "{msg}");
        assert!(matches!(err, GranuleError::Xml { .. }));
        assert!(utf8(vec![0xff, 0xfe, 0x00], Path::new(P)).is_err());
    }
}
