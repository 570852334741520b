//! An image's merged filesystem tree, as the layers build it: directories,
//! files, links and device nodes with their ownership, modes and xattrs.
//! File contents are not held here: their full blocks already sit in the
//! image file being written (see [`erofs`](super::erofs)); only the short
//! tail of each file is kept, to be placed inline next to its inode.

use std::collections::{BTreeMap, VecDeque};

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
/// Most symlinks followed while resolving one path, as Linux allows.
const MAX_SYMLINK_HOPS: usize = 40;

/// Continues a walk at a symlink's target: an absolute one from the root,
/// a relative one from the directory holding the link.
fn follow(stack: &mut Vec<NodeId>, todo: &mut VecDeque<Vec<u8>>, target: &[u8]) {
    if target.starts_with(b"/") {
        stack.truncate(1);
    }
    for part in target.split(|b| *b == b'/').rev() {
        todo.push_front(part.to_vec());
    }
}

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

    /// The node `parts` names. Symlinks on the way (not the last part)
    /// are followed inside the tree, as an image's layers are applied:
    /// `..` stops at the root and absolute targets start from it, so a
    /// later layer's `lib/x` lands in `usr/lib/` when `lib` is a link
    /// there (merged `/usr`).
    pub fn lookup(&self, parts: &[&[u8]]) -> Option<NodeId> {
        let (last, dirs) = parts.split_last()?;
        let dir = self.walk(dirs, None)?;
        self.entries(dir)?.get(*last).copied()
    }

    /// The directory `parts` names, following symlinks on the way as
    /// [`lookup`](Self::lookup) does, created (owned by root, 0755, in
    /// `layer`) where missing; a non-directory in the way is replaced.
    /// Fails on a symlink loop (more than 40 links).
    pub fn make_dirs(&mut self, parts: &[&[u8]], layer: usize) -> Result<NodeId, &'static str> {
        self.walk_mut(parts, layer)
    }

    /// Walks directories without creating any.
    fn walk(&self, parts: &[&[u8]], _: Option<usize>) -> Option<NodeId> {
        let mut stack = vec![ROOT];
        let mut todo: VecDeque<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            let at = *stack.last().expect("the root stays");
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let child = *self.entries(at)?.get(&part)?;
            match &self.nodes[child].body {
                Body::Dir(_) => stack.push(child),
                Body::Symlink(target) if hops < MAX_SYMLINK_HOPS => {
                    hops += 1;
                    follow(&mut stack, &mut todo, target);
                }
                _ => return None,
            }
        }
        stack.last().copied()
    }

    fn walk_mut(&mut self, parts: &[&[u8]], layer: usize) -> Result<NodeId, &'static str> {
        let mut stack = vec![ROOT];
        let mut todo: VecDeque<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            let at = *stack.last().expect("the root stays");
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let existing = self.entries(at).and_then(|e| e.get(&part)).copied();
            match existing.map(|id| (id, &self.nodes[id].body)) {
                Some((id, Body::Dir(_))) => stack.push(id),
                Some((_, Body::Symlink(target))) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err("too many levels of symlinks on the path");
                    }
                    let target = target.clone();
                    follow(&mut stack, &mut todo, &target);
                }
                _ => {
                    let dir = self.add(Node {
                        meta: Meta {
                            perm: 0o755,
                            ..Meta::default()
                        },
                        body: Body::Dir(BTreeMap::new()),
                        layer,
                    });
                    self.link(at, &part, dir);
                    stack.push(dir);
                }
            }
        }
        Ok(*stack.last().expect("the root stays"))
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
        let d = t.make_dirs(&[b"a", b"b"], 1).unwrap();
        let f = t.add(file(1));
        t.link(d, b"f", f);
        assert_eq!(t.lookup(&[b"a", b"b", b"f"]), Some(f));
        // A file in the way of a directory is replaced by one.
        let d2 = t.make_dirs(&[b"a", b"b", b"f"], 2).unwrap();
        assert_ne!(d2, f);
        assert!(t.entries(d2).is_some());
        assert!(!t.unlink(d2, b"nothing"));
    }

    #[test]
    fn symlinked_parents_are_followed_inside_the_tree() {
        let mut t = Tree::default();
        let usr_lib = t.make_dirs(&[b"usr", b"lib"], 1).unwrap();
        let link = |t: &mut Tree, dir: NodeId, name: &[u8], target: &[u8]| {
            let id = t.add(Node {
                meta: Meta::default(),
                body: Body::Symlink(target.to_vec()),
                layer: 1,
            });
            t.link(dir, name, id);
        };
        link(&mut t, ROOT, b"lib", b"usr/lib");
        // An absolute link, one that climbs past the root, and a loop.
        link(&mut t, usr_lib, b"abs", b"/usr/lib");
        link(&mut t, ROOT, b"up", b"../../../usr");
        link(&mut t, ROOT, b"loop", b"loop");
        assert_eq!(t.make_dirs(&[b"lib"], 2).unwrap(), usr_lib);
        assert_eq!(t.make_dirs(&[b"lib", b"abs"], 2).unwrap(), usr_lib);
        assert_eq!(t.make_dirs(&[b"up", b"lib"], 2).unwrap(), usr_lib);
        let f = t.add(file(2));
        t.link(usr_lib, b"libc.so", f);
        assert_eq!(t.lookup(&[b"lib", b"libc.so"]), Some(f));
        assert_eq!(t.lookup(&[b"up", b"lib", b"libc.so"]), Some(f));
        // A symlink loop is an error, not a walk without end.
        assert!(t.make_dirs(&[b"loop", b"x"], 2).is_err());
        assert!(t.lookup(&[b"loop", b"x"]).is_none());
        assert!(matches!(
            t.node(t.lookup(&[b"lib"]).unwrap()).body,
            Body::Symlink(_)
        ));
    }

    #[test]
    fn opaque_hides_only_lower_layers() {
        let mut t = Tree::default();
        let d = t.make_dirs(&[b"d"], 1).unwrap();
        let old = t.add(file(1));
        t.link(d, b"old", old);
        let new = t.add(file(2));
        t.link(d, b"new", new);
        t.make_opaque(d, 2);
        let names: Vec<&[u8]> = t.entries(d).unwrap().keys().map(Vec::as_slice).collect();
        assert_eq!(names, [b"new".as_slice()]);
    }
}
