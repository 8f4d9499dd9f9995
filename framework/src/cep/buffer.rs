//! The shared buffer (Flink's `SharedBuffer`): the events and match prefixes that partial
//! matches refer to, each stored once however many partial matches share it.
//!
//! ## Design
//!
//! A partial match is a chain of nodes read backwards: each node names an event, the stage
//! that took it and the node before it. Partial matches that share a prefix share its nodes;
//! every event is stored once, in an event slot that all nodes taking it point to. Nodes and
//! slots are reference counted and freed when the last partial match using them is released,
//! so the buffer holds exactly what live partial matches can still emit.
//!
//! ## Invariants
//!
//! - a node's `refs` counts the partial matches pointing at it plus the nodes whose `prev` it
//!   is; an event slot's `refs` counts the nodes naming it; nothing with `refs == 0` is kept
//!   (checked by [`SharedBuffer::check`] in tests);
//! - slots and nodes live in slabs (vectors with a free list), so their ids are small integers
//!   and the serialised form does not depend on any hash order.

use serde::{Deserialize, Serialize};

/// No node before this one.
pub(crate) const NO_NODE: u32 = u32::MAX;

/// A vector of optional values with a free list: stable small ids, no hashing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Slab<X> {
    slots: Vec<Option<X>>,
    free: Vec<u32>,
    len: usize,
}

impl<X> Default for Slab<X> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<X> Slab<X> {
    fn insert(&mut self, value: X) -> u32 {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            self.slots[id as usize] = Some(value);
            id
        } else {
            self.slots.push(Some(value));
            u32::try_from(self.slots.len() - 1).unwrap_or_else(|_| {
                unreachable!("a key's buffer is bounded by its partial-match limit")
            })
        }
    }

    fn remove(&mut self, id: u32) -> Option<X> {
        let value = self.slots.get_mut(id as usize)?.take();
        if value.is_some() {
            self.len -= 1;
            self.free.push(id);
        }
        value
    }

    fn get(&self, id: u32) -> Option<&X> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut X> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventSlot<T> {
    /// The event's position in its key's event-time order (ties in arrival order).
    pub(crate) seq: u64,
    pub(crate) timestamp: i64,
    pub(crate) event: T,
    refs: u32,
}

/// One step of a partial match: an event taken by a stage.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Node {
    pub(crate) event: u32,
    pub(crate) stage: u8,
    pub(crate) prev: u32,
    refs: u32,
}

/// The events and nodes of one key's partial matches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub(crate) struct SharedBuffer<T> {
    events: Slab<EventSlot<T>>,
    nodes: Slab<Node>,
}

impl<T> Default for SharedBuffer<T> {
    fn default() -> Self {
        Self {
            events: Slab::default(),
            nodes: Slab::default(),
        }
    }
}

impl<T> SharedBuffer<T> {
    /// Stores an event no node refers to yet; it is freed by [`SharedBuffer::release_event`]
    /// if no node takes it.
    pub(crate) fn add_event(&mut self, seq: u64, timestamp: i64, event: T) -> u32 {
        self.events.insert(EventSlot {
            seq,
            timestamp,
            event,
            refs: 0,
        })
    }

    /// Frees an event slot that no node refers to.
    pub(crate) fn release_event(&mut self, slot: u32) {
        if self.events.get(slot).is_some_and(|e| e.refs == 0) {
            self.events.remove(slot);
        }
    }

    /// A new node taking event `slot` into `stage` after `prev`, held once by its caller.
    pub(crate) fn add_node(&mut self, slot: u32, stage: u8, prev: u32) -> u32 {
        if let Some(event) = self.events.get_mut(slot) {
            event.refs += 1;
        }
        if let Some(node) = self.nodes.get_mut(prev) {
            node.refs += 1;
        }
        self.nodes.insert(Node {
            event: slot,
            stage,
            prev,
            refs: 1,
        })
    }

    /// Adds one hold on `node` (a second partial match ending at the same step).
    pub(crate) fn retain(&mut self, node: u32) {
        if let Some(entry) = self.nodes.get_mut(node) {
            entry.refs += 1;
        }
    }

    /// Releases one hold on `node`, freeing it (and what only it held) when none is left.
    pub(crate) fn release(&mut self, mut node: u32) {
        while let Some(entry) = self.nodes.get_mut(node) {
            entry.refs -= 1;
            if entry.refs > 0 {
                return;
            }
            let Some(entry) = self.nodes.remove(node) else {
                return;
            };
            if let Some(event) = self.events.get_mut(entry.event) {
                event.refs -= 1;
                if event.refs == 0 {
                    self.events.remove(entry.event);
                }
            }
            node = entry.prev;
        }
    }

    /// Walks the chain ending at `node`, last step first.
    pub(crate) fn chain(&self, node: u32) -> impl Iterator<Item = (&Node, &EventSlot<T>)> + '_ {
        let mut current = node;
        std::iter::from_fn(move || {
            let node = self.nodes.get(current)?;
            let event = self.events.get(node.event)?;
            current = node.prev;
            Some((node, event))
        })
    }

    /// Stored events and nodes.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.events.len(), self.nodes.len())
    }

    /// Checks the reference counts against `holders` (the nodes partial matches point at).
    #[cfg(test)]
    pub(crate) fn check(&self, holders: &[u32]) {
        let mut node_refs = vec![0u32; self.nodes.slots.len()];
        let mut event_refs = vec![0u32; self.events.slots.len()];
        for &h in holders {
            node_refs[h as usize] += 1;
        }
        for node in self.nodes.slots.iter().flatten() {
            if node.prev != NO_NODE {
                node_refs[node.prev as usize] += 1;
            }
            event_refs[node.event as usize] += 1;
        }
        for (i, node) in self.nodes.slots.iter().enumerate() {
            match node {
                Some(n) => assert_eq!(n.refs, node_refs[i], "node {i} refs"),
                None => assert_eq!(node_refs[i], 0, "freed node {i} still referenced"),
            }
        }
        for (i, event) in self.events.slots.iter().enumerate() {
            match event {
                Some(e) => assert_eq!(e.refs, event_refs[i], "event {i} refs"),
                None => assert_eq!(event_refs[i], 0, "freed event {i} still referenced"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_is_stored_once_and_freed_with_its_last_holder() {
        let mut buffer = SharedBuffer::default();
        let a = buffer.add_event(0, 0, "a");
        let first = buffer.add_node(a, 0, NO_NODE);
        let b = buffer.add_event(1, 1, "b");
        let left = buffer.add_node(b, 1, first);
        let right = buffer.add_node(b, 2, first);
        buffer.release(first);
        buffer.check(&[left, right]);
        assert_eq!(buffer.sizes(), (2, 3));
        buffer.release(left);
        buffer.check(&[right]);
        assert_eq!(buffer.sizes(), (2, 2));
        buffer.release(right);
        buffer.check(&[]);
        assert_eq!(buffer.sizes(), (0, 0));
        let unused = buffer.add_event(2, 2, "c");
        buffer.release_event(unused);
        assert_eq!(buffer.sizes(), (0, 0));
    }
}
