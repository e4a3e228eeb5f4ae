//! A TLV tree, to edit encodings structurally (lengths of enclosing objects follow).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Primitive(u32, Vec<u8>),
    Constructed(u32, Vec<Node>),
}

pub fn parse_tree(bytes: &[u8]) -> Vec<Node> {
    let mut reader = TlvReader::new(bytes);
    let mut nodes = Vec::new();
    while let Some(tlv) = reader.next_tlv().expect("sample encodings are valid TLV") {
        nodes.push(if tlv.tag.is_constructed() {
            Node::Constructed(tlv.tag.0, parse_tree(tlv.value))
        } else {
            Node::Primitive(tlv.tag.0, tlv.value.to_vec())
        });
    }
    nodes
}

pub fn encode_tree(nodes: &[Node]) -> Vec<u8> {
    let mut writer = TlvWriter::new();
    for node in nodes {
        match node {
            Node::Primitive(tag, value) => writer.put(*tag, value),
            Node::Constructed(tag, children) => writer.put(*tag, &encode_tree(children)),
        };
    }
    writer.into_bytes()
}

/// Every tree obtained by replacing exactly one node, at any depth, with what `edit`
/// returns for it.
pub fn single_edits(nodes: &[Node], edit: &dyn Fn(&Node) -> Option<Node>) -> Vec<Vec<Node>> {
    let mut out = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Some(replacement) = edit(node) {
            let mut copy = nodes.to_vec();
            copy[index] = replacement;
            out.push(copy);
        }
        if let Node::Constructed(tag, children) = node {
            for edited in single_edits(children, edit) {
                let mut copy = nodes.to_vec();
                copy[index] = Node::Constructed(*tag, edited);
                out.push(copy);
            }
        }
    }
    out
}

/// Encodings of `sample` with one primitive field of `field_tag` and `len` bytes replaced
/// by `value`.
pub fn with_field(sample: &Sample, field_tag: u32, len: usize, value: &[u8]) -> Vec<Vec<u8>> {
    let edit = |node: &Node| match node {
        Node::Primitive(found, old) if *found == field_tag && old.len() == len => {
            Some(Node::Primitive(*found, value.to_vec()))
        }
        _ => None,
    };
    single_edits(&parse_tree(&sample.message.encode()), &edit)
        .iter()
        .map(|tree| encode_tree(tree))
        .collect()
}
