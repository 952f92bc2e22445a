//! Guest tag grammar, with ProxLB's tag names accepted as synonyms.

use std::collections::BTreeSet;

/// What a guest's tags mean to the engine. Tags are matched case-insensitively after trimming;
/// a tag string may hold several tags separated by `;`, `,` or white space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestTags {
    /// `ignore` (or ProxLB's `plb_ignore*`): never recommended, except off a maintenance node.
    pub ignore: bool,
    /// Groups of `exclude_<g>` (or `plb_anti_affinity_<g>`): no two members on one node.
    pub exclude: BTreeSet<String>,
    /// Groups of `affinity_<g>` (or `plb_affinity_<g>`): members follow each other.
    pub affinity: BTreeSet<String>,
    /// `io_exempt` or `proxbalance_io_exempt`: the host's IOWait is not held against it.
    pub io_exempt: bool,
    /// Nodes of `pin_<node>` (or `plb_pin_<node>`): the guest runs on one of them (strict).
    pub pins: BTreeSet<String>,
    /// Nodes of `prefer_<node>`: the guest should run on one of them (soft).
    pub prefers: BTreeSet<String>,
}

impl GuestTags {
    /// Parses raw tag strings as Proxmox stores them.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Self {
        let mut tags = GuestTags::default();
        let words = raw.iter().flat_map(|s| {
            s.as_ref()
                .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        });
        for word in words {
            if word == "ignore" || word.starts_with("plb_ignore") {
                tags.ignore = true;
            } else if word == "io_exempt" || word == "proxbalance_io_exempt" {
                tags.io_exempt = true;
            } else if let Some(group) = group_of(&word, &["exclude_", "plb_anti_affinity_"]) {
                tags.exclude.insert(group);
            } else if let Some(group) = group_of(&word, &["affinity_", "plb_affinity_"]) {
                tags.affinity.insert(group);
            } else if let Some(node) = group_of(&word, &["pin_", "plb_pin_"]) {
                tags.pins.insert(node);
            } else if let Some(node) = group_of(&word, &["prefer_"]) {
                tags.prefers.insert(node);
            }
        }
        tags
    }
}

fn group_of(word: &str, prefixes: &[&str]) -> Option<String> {
    prefixes
        .iter()
        .find_map(|p| word.strip_prefix(p))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxlb_synonyms_and_case() {
        let t = GuestTags::parse(&[
            " PLB_Anti_Affinity_DB ",
            "plb_affinity_web;Ignore",
            "io_exempt",
        ]);
        assert!(t.ignore);
        assert!(t.io_exempt);
        assert_eq!(t.exclude.iter().collect::<Vec<_>>(), ["db"]);
        assert_eq!(t.affinity.iter().collect::<Vec<_>>(), ["web"]);
        let t = GuestTags::parse(&["plb_pin_PVE1 pin_pve2;prefer_pve3", "pin_"]);
        assert_eq!(t.pins.iter().collect::<Vec<_>>(), ["pve1", "pve2"]);
        assert_eq!(t.prefers.iter().collect::<Vec<_>>(), ["pve3"]);
    }

    #[test]
    fn separators_and_empty_groups() {
        let t = GuestTags::parse(&["exclude_a exclude_b,exclude_", "plb_ignore_me"]);
        assert!(t.ignore);
        assert_eq!(t.exclude.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(t.affinity.is_empty());
        assert_eq!(GuestTags::parse::<&str>(&[]), GuestTags::default());
    }
}
