//! An image's merged filesystem tree, as the layers build it: directories,
//! files, links and device nodes with their ownership, modes and xattrs.
//! File contents are not held here: their full blocks already sit in the
//! image file being written (see [`erofs`](super::erofs)); only the short
//! tail of each file is kept, to be placed inline next to its inode.

use std::collections::BTreeMap;

/// Index of a node in its [`Tree`].
pub type NodeId = usize;

/// Where a regular file's (or long symlink's) contents are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileData {
    /// Total size in bytes.
    pub size: u64,
    /// First block of the contents written to the image (`u32::MAX`: none).
    pub blkaddr: u32,
    /// Whether the last partial block is kept in `tail` to be placed inline
    /// (otherwise every block, the last one padded, is in the image).
    pub inline: bool,
    /// The last `size % 4096` bytes when `inline`.
    pub tail: Vec<u8>,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A directory: its entries by name (byte order).
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// A regular file.
    File(FileData),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character device (`rdev` in the kernel's new encoding).
    Char(u32),
    /// A block device.
    Block(u32),
    /// A named pipe.
    Fifo,
}

/// Ownership, permissions, time and xattrs of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes: full name (`user.x`, `security.capability`) and value.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One filesystem object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its metadata.
    pub meta: Meta,
    /// What it is.
    pub body: Body,
    /// The layer that created it: an opaque directory in a later layer
    /// hides what lower layers put in it, not what its own layer did.
    pub layer: usize,
}

/// The tree; node 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node {
                meta: Meta {
                    perm: 0o755,
                    ..Meta::default()
                },
                body: Body::Dir(BTreeMap::new()),
                layer: 0,
            }],
        }
    }
}

/// The root's id.
pub const ROOT: NodeId = 0;

impl Tree {
    /// A node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// A node, to change.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    /// How many nodes were ever created (removed ones included).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Adds a node that no directory names yet.
    pub fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The entries of a directory node (`None`: not a directory).
    pub fn entries(&self, dir: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.nodes[dir].body {
            Body::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: NodeId) -> Option<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.nodes[dir].body {
            Body::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    /// Follows `parts` from the root without following symlinks.
    pub fn lookup(&self, parts: &[&[u8]]) -> Option<NodeId> {
        let mut at = ROOT;
        for part in parts {
            at = *self.entries(at)?.get(*part)?;
        }
        Some(at)
    }

    /// The directory `parts` names, created (owned by root, 0755, in
    /// `layer`) where missing; a non-directory in the way is replaced.
    pub fn make_dirs(&mut self, parts: &[&[u8]], layer: usize) -> NodeId {
        let mut at = ROOT;
        for part in parts {
            let existing = self.entries(at).and_then(|e| e.get(*part)).copied();
            at = match existing {
                Some(id) if self.entries(id).is_some() => id,
                _ => {
                    let dir = self.add(Node {
                        meta: Meta {
                            perm: 0o755,
                            ..Meta::default()
                        },
                        body: Body::Dir(BTreeMap::new()),
                        layer,
                    });
                    self.link(at, part, dir);
                    dir
                }
            };
        }
        at
    }

    /// Names `node` as `name` in directory `dir`, replacing what was there.
    pub fn link(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        if let Some(entries) = self.entries_mut(dir) {
            entries.insert(name.to_vec(), node);
        }
    }

    /// Removes `name` from directory `dir`; true if it was there.
    pub fn unlink(&mut self, dir: NodeId, name: &[u8]) -> bool {
        self.entries_mut(dir)
            .is_some_and(|entries| entries.remove(name).is_some())
    }

    /// Removes every entry of `dir` that a layer below `layer` created.
    pub fn make_opaque(&mut self, dir: NodeId, layer: usize) {
        let lower: Vec<Vec<u8>> = match self.entries(dir) {
            Some(entries) => entries
                .iter()
                .filter(|(_, id)| self.nodes[**id].layer < layer)
                .map(|(name, _)| name.clone())
                .collect(),
            None => return,
        };
        if let Some(entries) = self.entries_mut(dir) {
            for name in lower {
                entries.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(layer: usize) -> Node {
        Node {
            meta: Meta::default(),
            body: Body::File(FileData::default()),
            layer,
        }
    }

    #[test]
    fn dirs_are_made_and_files_replaced() {
        let mut t = Tree::default();
        let d = t.make_dirs(&[b"a", b"b"], 1);
        let f = t.add(file(1));
        t.link(d, b"f", f);
        assert_eq!(t.lookup(&[b"a", b"b", b"f"]), Some(f));
        // A file in the way of a directory is replaced by one.
        let d2 = t.make_dirs(&[b"a", b"b", b"f"], 2);
        assert_ne!(d2, f);
        assert!(t.entries(d2).is_some());
        assert!(!t.unlink(d2, b"nothing"));
    }

    #[test]
    fn opaque_hides_only_lower_layers() {
        let mut t = Tree::default();
        let d = t.make_dirs(&[b"d"], 1);
        let old = t.add(file(1));
        t.link(d, b"old", old);
        let new = t.add(file(2));
        t.link(d, b"new", new);
        t.make_opaque(d, 2);
        let names: Vec<&[u8]> = t.entries(d).unwrap().keys().map(Vec::as_slice).collect();
        assert_eq!(names, [b"new".as_slice()]);
    }
}
