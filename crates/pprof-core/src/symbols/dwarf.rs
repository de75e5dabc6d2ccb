//! DWARF lookups that keep nothing but their answers.
//!
//! For one batch of addresses in one file: `.debug_aranges` names the
//! compilation units that hold them; each such unit's entries are walked
//! once, keeping only the functions and inlined calls whose ranges hold one
//! of the addresses; its line program is run once, keeping only the rows
//! that cover them. Nothing is parsed for units no address falls in, and
//! nothing of a unit outlives its walk, so the memory a batch needs grows
//! with the addresses asked (and the largest unit touched), not with the
//! size of the binary.
//!
//! Sections are read in place from the mapped file. A compressed section
//! (`SHF_COMPRESSED`, as in distributions' separate debug files) is
//! inflated into an anonymous mapping of its full size of which only the
//! parts a batch reads are written (so only those pages become resident):
//! the units, their abbreviations and line programs, and the small
//! sections read at random (strings, range lists, address table).
//!
//! The walk follows what `addr2line` (which `backtrace` uses) reports for
//! an address, frame for frame: the innermost inlined call first, each
//! with the call site of the one inside it, then the function.

use std::collections::HashMap;
use std::ops::Range;

use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, NativeEndian, Reader, SectionId};

use super::elf::{ElfFile, SectionBytes};
use super::line;

type R<'a> = EndianSlice<'a, NativeEndian>;
type Dwarf<'a> = gimli::Dwarf<R<'a>>;
type UnitRef<'u, 'a> = gimli::UnitRef<'u, R<'a>>;

/// A compressed section inflated whole (strings, range lists, ...) may be
/// at most this large; above it the file's DWARF is not used (its symbol
/// table still names the functions).
const MAX_WHOLE_INFLATE: usize = 4 << 20;

/// Name references followed (`DW_AT_abstract_origin`, `DW_AT_specification`)
/// before giving up, as `addr2line` does.
const MAX_NAME_HOPS: usize = 16;

/// Units parsed to follow references into other units (LTO builds), kept
/// for one batch at most.
const MAX_OTHER_UNITS: usize = 64;

/// What the debug info says about one address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// The function holding the address: `Some(None)` when it has no name.
    pub(super) function: Option<Option<String>>,
    /// Calls inlined at the address, outermost first.
    pub(super) inlined: Vec<Inlined>,
    /// The line table's file and line for the address.
    pub(super) location: Option<(String, u32)>,
}

/// One inlined call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Inlined {
    pub(super) name: Option<String>,
    /// Where the call is (in the function it was inlined into).
    pub(super) call_file: String,
    pub(super) call_line: u32,
}

/// One frame at an address: the (mangled) name when known, file, line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RawFrame {
    pub(super) name: Option<String>,
    pub(super) file: String,
    pub(super) line: u32,
}

impl Found {
    /// The frames at the address, innermost first, as `addr2line` gives
    /// them: each inlined call at the location inside it, the function at
    /// the call site of its outermost inlined call.
    pub(super) fn into_frames(self) -> Vec<RawFrame> {
        let (mut file, mut line) = self.location.clone().unwrap_or_default();
        let Some(function) = self.function else {
            return match self.location {
                Some((file, line)) => vec![RawFrame {
                    name: None,
                    file,
                    line,
                }],
                None => Vec::new(),
            };
        };
        let mut frames = Vec::with_capacity(self.inlined.len() + 1);
        for call in self.inlined.into_iter().rev() {
            frames.push(RawFrame {
                name: call.name,
                file: std::mem::replace(&mut file, call.call_file),
                line: std::mem::replace(&mut line, call.call_line),
            });
        }
        frames.push(RawFrame {
            name: function,
            file,
            line,
        });
        frames
    }
}

/// What DWARF in `file` says about each of `sorted` (stated addresses,
/// ascending, no duplicates); one `Found` per address, empty where the
/// debug info has nothing.
pub(super) fn resolve(file: &ElfFile<'_>, sorted: &[u64], kept: &Kept) -> Vec<Found> {
    let mut out = vec![Found::default(); sorted.len()];
    let Some(mut store) = Store::new(file, kept) else {
        return out;
    };
    // Errors (bad or truncated DWARF) leave the addresses concerned
    // unresolved; the symbol table still names them.
    let _ = resolve_into(&mut store, sorted, kept, &mut out);
    store.keep_inflated(kept);
    out
}

fn resolve_into(
    store: &mut Store<'_>,
    sorted: &[u64],
    kept: &Kept,
    out: &mut [Found],
) -> gimli::Result<()> {
    for id in [
        SectionId::DebugAranges,
        SectionId::DebugStr,
        SectionId::DebugLineStr,
        SectionId::DebugStrOffsets,
        SectionId::DebugAddr,
        SectionId::DebugRanges,
        SectionId::DebugRngLists,
    ] {
        if !store.fill_whole(id) {
            return Ok(());
        }
    }
    let groups = {
        let dwarf = store.dwarf();
        units_of(
            &dwarf,
            sorted,
            &kept.unlisted,
            !store.is_sparse(SectionId::DebugInfo),
        )?
    };
    if groups.is_empty() {
        return Ok(());
    }
    if store.is_sparse(SectionId::DebugInfo) {
        fill_units(store, &groups)?;
    }
    let dwarf = store.dwarf();
    let mut others = OtherUnits::default();
    for (offset, members) in &groups {
        // One bad unit must not cost the others their answers.
        let _ = resolve_unit(&dwarf, *offset, members, sorted, out, &mut others, kept);
    }
    Ok(())
}

/// What the reader keeps of one file between lookups (with the images'
/// table, so until 10 s idle): small indexes, never parsed entries, names
/// or line rows.
#[derive(Default)]
pub(super) struct Kept {
    /// Code ranges of the units `.debug_aranges` leaves out (most such
    /// units hold no code: some 1,600 of the bench server's 2,100), found
    /// once by reading those units' own first entries.
    unlisted: Unlisted,
    /// For units walked before: each function's ranges and entry offset,
    /// so a later lookup walks only the functions that hold its addresses.
    functions: std::sync::Mutex<Functions>,
    /// Compressed sections as far as earlier lookups inflated them (the
    /// sparse mappings and their filled ranges), so that a library's debug
    /// file is not inflated again for each lookup. Taken by one lookup at a
    /// time; a lookup meanwhile starts afresh.
    inflated: std::sync::Mutex<Vec<Inflated>>,
}

/// One compressed section: its sparse mapping, the ranges written, where
/// inflating can resume.
type Inflated = (
    SectionId,
    memmap2::MmapMut,
    Vec<Range<usize>>,
    Vec<Checkpoint>,
);

type Unlisted = std::sync::OnceLock<Vec<(Range<u64>, usize)>>;

/// Indexes kept per unit (by its offset in `.debug_info`).
#[derive(Default)]
struct Functions {
    by_unit: HashMap<usize, std::sync::Arc<UnitIndex>>,
    entries: usize,
}

/// Ranges kept before all are dropped and gathered again: 24 bytes each,
/// 3 MiB at most (the bench server has ~60,000 functions in all).
const MAX_KEPT_FUNCTIONS: usize = 1 << 17;

/// What a unit's first lookup learnt: where each function's entry is and
/// where each line sequence's opcodes start, with the addresses they cover.
struct UnitIndex {
    functions: Ranges,
    sequences: Ranges,
}

/// `(begin, end, offset)` triples sorted by `begin`, and the longest range.
struct Ranges {
    ranges: Vec<(u64, u64, usize)>,
    longest: u64,
}

impl Ranges {
    fn new(mut ranges: Vec<(u64, u64, usize)>) -> Self {
        ranges.sort_unstable_by_key(|r| r.0);
        let longest = ranges.iter().map(|r| r.1 - r.0).max().unwrap_or(0);
        Ranges { ranges, longest }
    }

    /// The offsets of the ranges holding any of `sorted`, ascending (the
    /// order a whole walk or run meets them).
    fn holding(&self, sorted: &[u64]) -> Vec<usize> {
        let mut starts = Vec::new();
        for &a in sorted {
            let mut i = self.ranges.partition_point(|r| r.0 <= a);
            while i > 0 && self.ranges[i - 1].0.saturating_add(self.longest) > a {
                i -= 1;
                let (begin, end, at) = self.ranges[i];
                if begin <= a && a < end {
                    starts.push(at);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }
}

impl Kept {
    pub(super) fn new() -> Self {
        Kept::default()
    }

    fn take_inflated(&self) -> Vec<Inflated> {
        std::mem::take(
            &mut *self
                .inflated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn put_inflated(&self, inflated: Vec<Inflated>) {
        let mut kept = self
            .inflated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.is_empty() {
            *kept = inflated;
        }
    }

    fn index_of(&self, unit: usize) -> Option<std::sync::Arc<UnitIndex>> {
        let kept = self
            .functions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.by_unit.get(&unit).cloned()
    }

    fn keep_index(&self, unit: usize, index: UnitIndex) {
        let entries = index.functions.ranges.len() + index.sequences.ranges.len();
        let mut kept = self
            .functions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.entries + entries > MAX_KEPT_FUNCTIONS {
            kept.by_unit.clear();
            kept.entries = 0;
        }
        kept.entries += entries;
        kept.by_unit.insert(unit, std::sync::Arc::new(index));
    }
}

/// The compilation units holding `sorted`'s addresses, each with the
/// indices of its addresses (ascending): from `.debug_aranges`, and for
/// the addresses it leaves out from the ranges in `unlisted` (worked out
/// on first need when `scan_all` allows reading every unit's header).
fn units_of(
    dwarf: &Dwarf<'_>,
    sorted: &[u64],
    unlisted: &Unlisted,
    scan_all: bool,
) -> gimli::Result<Vec<(DebugInfoOffset, Vec<usize>)>> {
    let mut unit_of: Vec<Option<DebugInfoOffset>> = vec![None; sorted.len()];
    let assign = |unit_of: &mut [Option<DebugInfoOffset>], begin: u64, end: u64, unit: usize| {
        let from = sorted.partition_point(|a| *a < begin);
        let to = sorted.partition_point(|a| *a < end);
        for slot in &mut unit_of[from..to] {
            slot.get_or_insert(DebugInfoOffset(unit));
        }
    };
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        let unit = header.debug_info_offset().0;
        let mut entries = header.entries();
        loop {
            let entry = match entries.next() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                // addr2line skips bad entries (address overflow) the same way.
                Err(_) => continue,
            };
            let range = entry.range();
            if range.begin < range.end {
                assign(&mut unit_of, range.begin, range.end, unit);
            }
        }
    }
    if scan_all && unit_of.iter().any(Option::is_none) {
        let ranges = unlisted.get_or_init(|| unlisted_ranges(dwarf).unwrap_or_default());
        for (range, unit) in ranges {
            assign(&mut unit_of, range.start, range.end, *unit);
        }
    }
    let mut groups: HashMap<DebugInfoOffset, Vec<usize>> = HashMap::new();
    for (i, unit) in unit_of.into_iter().enumerate() {
        if let Some(unit) = unit {
            groups.entry(unit).or_default().push(i);
        }
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|(offset, _)| offset.0);
    Ok(groups)
}

/// The code ranges of the units that have no `.debug_aranges` set.
fn unlisted_ranges(dwarf: &Dwarf<'_>) -> gimli::Result<Vec<(Range<u64>, usize)>> {
    let mut listed = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        listed.push(header.debug_info_offset().0);
    }
    listed.sort_unstable();
    let mut found = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let Some(offset) = header.debug_info_offset() else {
            continue;
        };
        if listed.binary_search(&offset.0).is_ok() {
            continue;
        }
        // A bad unit keeps its addresses unnamed, not the others'.
        let _ = root_ranges(dwarf, &header, |range| found.push((range, offset.0)));
    }
    Ok(found)
}

/// Call `f` with each code range of a unit's first entry, reading only
/// that entry (not the unit's line program header nor its name strings,
/// which `gimli::Unit` parses: this runs over every unlisted unit once).
fn root_ranges(
    dwarf: &Dwarf<'_>,
    header: &gimli::UnitHeader<R<'_>>,
    mut f: impl FnMut(Range<u64>),
) -> gimli::Result<()> {
    let abbreviations = dwarf.abbreviations(header)?;
    let mut entries = header.entries_raw(&abbreviations, None)?;
    let Some(abbrev) = entries.read_abbreviation()? else {
        return Ok(());
    };
    let (mut low, mut high, mut ranges) = (None, None, None);
    let mut addr_base = gimli::DebugAddrBase(0);
    let mut rnglists_base = gimli::DebugRngListsBase(0);
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec)?;
        match (attr.name(), attr.value()) {
            (gimli::DW_AT_low_pc, value) => low = Some(value),
            (gimli::DW_AT_high_pc, value) => high = Some(value),
            (gimli::DW_AT_ranges, value) => ranges = Some(value),
            (
                gimli::DW_AT_addr_base | gimli::DW_AT_GNU_addr_base,
                AttributeValue::DebugAddrBase(base),
            ) => addr_base = base,
            (
                gimli::DW_AT_rnglists_base | gimli::DW_AT_GNU_ranges_base,
                AttributeValue::DebugRngListsBase(base),
            ) => rnglists_base = base,
            _ => {}
        }
    }
    let address = |value: Option<AttributeValue<R<'_>>>| match value {
        Some(AttributeValue::Addr(a)) => Some(a),
        Some(AttributeValue::DebugAddrIndex(i)) => dwarf
            .debug_addr
            .get_address(header.address_size(), addr_base, i)
            .ok(),
        _ => None,
    };
    let base = address(low).unwrap_or(0);
    let encoding = header.encoding();
    let offset = match ranges {
        Some(AttributeValue::RangeListsRef(raw)) => Some(gimli::RangeListsOffset(raw.0)),
        Some(AttributeValue::DebugRngListsIndex(i)) => {
            Some(dwarf.ranges.get_offset(encoding, rnglists_base, i)?)
        }
        _ => None,
    };
    if let Some(offset) = offset {
        let mut list = dwarf
            .ranges
            .ranges(offset, encoding, base, &dwarf.debug_addr, addr_base)?;
        while let Some(r) = list.next()? {
            if r.begin < r.end {
                f(r.begin..r.end);
            }
        }
    } else if let Some(begin) = address(low) {
        let end = match high {
            Some(AttributeValue::Udata(size)) => begin.checked_add(size),
            other => address(other),
        };
        if let Some(end) = end.filter(|end| begin < *end) {
            f(begin..end);
        }
    }
    Ok(())
}

/// Inflate what the units of `groups` need from compressed sections:
/// their entries, their abbreviations, their line programs.
fn fill_units(
    store: &mut Store<'_>,
    groups: &[(DebugInfoOffset, Vec<usize>)],
) -> gimli::Result<()> {
    let starts: Vec<usize> = groups.iter().map(|(o, _)| o.0).collect();
    store.fill_lengths(SectionId::DebugInfo, &starts);
    let abbrevs: Vec<usize> = {
        let dwarf = store.dwarf();
        starts
            .iter()
            .filter_map(|s| dwarf.unit_header(DebugInfoOffset(*s)).ok())
            .map(|h| h.debug_abbrev_offset().0)
            .collect()
    };
    store.fill_abbreviations(&abbrevs);
    let lines: Vec<usize> = {
        let dwarf = store.dwarf();
        starts
            .iter()
            .filter_map(|s| line_program_offset(&dwarf, DebugInfoOffset(*s)))
            .collect()
    };
    store.fill_lengths(SectionId::DebugLine, &lines);
    Ok(())
}

/// `DW_AT_stmt_list` of the unit at `offset`, read from its first entry.
fn line_program_offset(dwarf: &Dwarf<'_>, offset: DebugInfoOffset) -> Option<usize> {
    let header = dwarf.unit_header(offset).ok()?;
    let abbreviations = dwarf.abbreviations(&header).ok()?;
    let mut entries = header.entries_raw(&abbreviations, None).ok()?;
    let abbrev = entries.read_abbreviation().ok()??;
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec).ok()?;
        if let AttributeValue::DebugLineRef(line) = attr.value() {
            return Some(line.0);
        }
    }
    None
}

/// Attributes of one subprogram or inlined subroutine entry.
#[derive(Default)]
struct Attrs<'a> {
    low_pc: Option<u64>,
    high_pc: Option<u64>,
    size: Option<u64>,
    ranges: Option<gimli::RangeListsOffset>,
    name: Name<'a>,
    call_file: Option<u64>,
    call_line: u32,
}

/// Where an entry's name comes from.
#[derive(Debug, Clone, Copy, Default)]
enum Name<'a> {
    #[default]
    None,
    /// `DW_AT_linkage_name` (the mangled symbol, `true`) or else
    /// `DW_AT_name`, as the attribute's value: the string is read only for
    /// the entries that hold an asked address.
    Here(AttributeValue<R<'a>>, bool),
    /// Another entry's name (`DW_AT_abstract_origin`, `DW_AT_specification`).
    There(AttributeValue<R<'a>>),
}

impl<'a> Name<'a> {
    fn linkage(&mut self, value: AttributeValue<R<'a>>) {
        *self = Name::Here(value, true);
    }

    fn plain(&mut self, value: AttributeValue<R<'a>>) {
        if !matches!(self, Name::Here(_, true)) {
            *self = Name::Here(value, false);
        }
    }

    fn origin(&mut self, value: AttributeValue<R<'a>>) {
        if matches!(self, Name::None) {
            *self = Name::There(value);
        }
    }
}

fn read_attrs<'a>(
    unit: UnitRef<'_, 'a>,
    entries: &mut gimli::EntriesRaw<'_, R<'a>>,
    abbrev: &gimli::Abbreviation,
) -> gimli::Result<Attrs<'a>> {
    let mut attrs = Attrs::default();
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec)?;
        match attr.name() {
            gimli::DW_AT_low_pc => match attr.value() {
                AttributeValue::Addr(a) => attrs.low_pc = Some(a),
                AttributeValue::DebugAddrIndex(i) => attrs.low_pc = Some(unit.address(i)?),
                _ => {}
            },
            gimli::DW_AT_high_pc => match attr.value() {
                AttributeValue::Addr(a) => attrs.high_pc = Some(a),
                AttributeValue::DebugAddrIndex(i) => attrs.high_pc = Some(unit.address(i)?),
                AttributeValue::Udata(size) => attrs.size = Some(size),
                _ => {}
            },
            gimli::DW_AT_ranges => attrs.ranges = unit.attr_ranges_offset(attr.value())?,
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                attrs.name.linkage(attr.value());
            }
            gimli::DW_AT_name => attrs.name.plain(attr.value()),
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                attrs.name.origin(attr.value());
            }
            gimli::DW_AT_call_file => {
                // DWARF 5 numbers files from 0; before, 0 means "none".
                if let AttributeValue::FileIndex(fi) = attr.value()
                    && (fi > 0 || unit.header.version() >= 5)
                {
                    attrs.call_file = Some(fi);
                }
            }
            gimli::DW_AT_call_line => {
                attrs.call_line = attr
                    .udata_value()
                    .and_then(|l| u32::try_from(l).ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(attrs)
}

/// Call `f` with each address range of an entry.
fn each_range(
    unit: UnitRef<'_, '_>,
    attrs: &Attrs<'_>,
    mut f: impl FnMut(u64, u64),
) -> gimli::Result<()> {
    if let Some(offset) = attrs.ranges {
        let mut ranges = unit.ranges(offset)?;
        while let Some(r) = ranges.next()? {
            if r.begin < r.end {
                f(r.begin, r.end);
            }
        }
    } else if let Some(begin) = attrs.low_pc {
        let end = attrs
            .high_pc
            .or_else(|| attrs.size.map(|s| begin.wrapping_add(s)));
        // A `-1` tombstone start overflows here and is dropped.
        if let Some(end) = end
            && begin < end
        {
            f(begin, end);
        }
    }
    Ok(())
}

/// What the walk keeps for one address of a unit.
#[derive(Default)]
struct Local<'a> {
    function: Option<Name<'a>>,
    inlined: Vec<(Name<'a>, Option<u64>, u32)>,
    row: Option<(u64, u32)>,
}

/// An entry open on the walk's path whose subtree may hold addresses.
struct Open {
    depth: isize,
    /// 0 for a function, n for a call inlined n levels deep.
    chain: usize,
    /// Indices (into the unit's addresses) inside this entry's ranges.
    members: Vec<usize>,
}

/// Walk a unit's entries (or, with `subtree`, one function's entries from
/// where `entries` starts), noting for each of `addrs` the function and the
/// inlined calls that hold it; with `functions`, also every function's
/// ranges and entry offset, to walk only those later.
fn walk<'a>(
    unit: UnitRef<'_, 'a>,
    mut entries: gimli::EntriesRaw<'_, R<'a>>,
    subtree: bool,
    addrs: &[u64],
    local: &mut [Local<'a>],
    mut functions: Option<&mut Vec<(u64, u64, usize)>>,
) -> gimli::Result<()> {
    let mut open: Vec<Open> = Vec::new();
    // Most entries are types and their members: the loop's common path is
    // kept to plain integer tests, as it also runs in unoptimised builds.
    const SUBPROGRAM: u16 = gimli::DW_TAG_subprogram.0;
    const INLINED: u16 = gimli::DW_TAG_inlined_subroutine.0;
    // The depth of `open`'s last entry, and whether it holds addresses.
    let (mut top_depth, mut top_has_members) = (isize::MIN, false);
    let mut first = true;
    while !entries.is_empty() {
        let depth = entries.next_depth();
        // A function's subtree ends at its next sibling.
        if subtree && !first && depth <= 0 {
            break;
        }
        first = false;
        let at = entries.next_offset().0;
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        if top_depth >= depth {
            while open.last().is_some_and(|o| o.depth >= depth) {
                open.pop();
            }
            (top_depth, top_has_members) = open
                .last()
                .map_or((isize::MIN, false), |o| (o.depth, !o.members.is_empty()));
        }
        let tag = abbrev.tag().0;
        if tag != SUBPROGRAM && (tag != INLINED || !top_has_members) {
            entries.skip_attributes(abbrev.attributes())?;
            // Calls inlined below a call without our addresses are not ours.
            if tag == INLINED && abbrev.has_children() {
                open.push(Open {
                    depth,
                    chain: 0,
                    members: Vec::new(),
                });
                (top_depth, top_has_members) = (depth, false);
            }
            continue;
        }
        let subprogram = tag == SUBPROGRAM;
        let attrs = read_attrs(unit, &mut entries, abbrev)?;
        let (chain, inside) = if subprogram {
            let mut inside = Vec::new();
            each_range(unit, &attrs, |begin, end| {
                let from = addrs.partition_point(|a| *a < begin);
                let to = addrs.partition_point(|a| *a < end);
                inside.extend(from..to);
                if let Some(functions) = functions.as_deref_mut() {
                    functions.push((begin, end, at));
                }
            })?;
            inside.sort_unstable();
            inside.dedup();
            (0, inside)
        } else {
            let parent = open
                .last()
                .map_or((0, &[][..]), |o| (o.chain, &o.members[..]));
            let mut ranges = Vec::new();
            each_range(unit, &attrs, |b, e| ranges.push(b..e))?;
            let inside = parent
                .1
                .iter()
                .copied()
                .filter(|&j| ranges.iter().any(|r| r.contains(&addrs[j])))
                .collect();
            (parent.0 + 1, inside)
        };
        for &j in &inside {
            let here = &mut local[j];
            if subprogram {
                here.function = Some(attrs.name);
                here.inlined.clear();
            } else {
                here.inlined.truncate(chain - 1);
                here.inlined
                    .push((attrs.name, attrs.call_file, attrs.call_line));
            }
        }
        if abbrev.has_children() {
            (top_depth, top_has_members) = (depth, !inside.is_empty());
            open.push(Open {
                depth,
                chain,
                members: inside,
            });
        }
    }
    Ok(())
}

fn resolve_unit<'a>(
    dwarf: &'a Dwarf<'a>,
    offset: DebugInfoOffset,
    members: &[usize],
    sorted: &[u64],
    out: &mut [Found],
    others: &mut OtherUnits<'a>,
    kept: &Kept,
) -> gimli::Result<()> {
    let header = dwarf.unit_header(offset)?;
    let unit = dwarf.unit(header)?;
    let unit = unit.unit_ref(dwarf);
    let addrs: Vec<u64> = members.iter().map(|&i| sorted[i]).collect();
    let mut local: Vec<Local<'a>> = (0..addrs.len()).map(|_| Local::default()).collect();

    let index = kept.index_of(offset.0);
    let mut functions = Vec::new();
    match &index {
        // Walked before: only the functions that hold the addresses.
        Some(index) => {
            for start in index.functions.holding(&addrs) {
                let entries = unit.entries_raw(Some(gimli::UnitOffset(start)))?;
                walk(unit, entries, true, &addrs, &mut local, None)?;
            }
        }
        None => walk(
            unit,
            unit.entries_raw(None)?,
            false,
            &addrs,
            &mut local,
            Some(&mut functions),
        )?,
    }

    let mut files = FileNames::default();
    let mut sequences = Vec::new();
    if let Some(program) = unit.line_program.clone() {
        let mut rows = Rows::default();
        match line::Program::new(program.header()) {
            Some(vm) => match &index {
                // Run before: only the sequences that hold the addresses.
                Some(index) => {
                    for start in index.sequences.holding(&addrs) {
                        vm.run(start, true, |row| rows.row(row, &addrs, &mut local), |_| {});
                    }
                }
                None => vm.run(
                    0,
                    false,
                    |row| rows.row(row, &addrs, &mut local),
                    |s| sequences.push((s.start, s.end, s.offset)),
                ),
            },
            None => {
                let mut gimli_rows = program.clone().rows();
                // A broken line program ends the rows, not the functions found.
                while let Ok(Some((_, row))) = gimli_rows.next_row() {
                    let line = row.line().map_or(0, std::num::NonZeroU64::get);
                    let row = line::Row {
                        address: row.address(),
                        file: row.file_index(),
                        line,
                        end_sequence: row.end_sequence(),
                    };
                    rows.row(row, &addrs, &mut local);
                }
            }
        }
        files.header = Some(program.header().clone());
    }
    if index.is_none() {
        kept.keep_index(
            offset.0,
            UnitIndex {
                functions: Ranges::new(functions),
                sequences: Ranges::new(sequences),
            },
        );
    }

    let mut names: HashMap<usize, Option<String>> = HashMap::new();
    for (j, here) in local.into_iter().enumerate() {
        let found = &mut out[members[j]];
        found.location = here.row.map(|(file, line)| (files.name(unit, file), line));
        if let Some(function) = here.function {
            found.function = Some(name_of(unit, function, &mut names, others));
            found.inlined = here
                .inlined
                .into_iter()
                .map(|(name, call_file, call_line)| Inlined {
                    name: name_of(unit, name, &mut names, others),
                    call_file: call_file.map(|f| files.name(unit, f)).unwrap_or_default(),
                    call_line,
                })
                .collect();
        }
    }
    Ok(())
}

/// Matches line rows, as they come, to a unit's sorted addresses: the row
/// in force (address, file, line) and the first address not below it.
/// Rows rise within a sequence, so one cursor walks the addresses with
/// plain comparisons.
#[derive(Default)]
struct Rows {
    current: Option<(u64, u64, u64)>,
    next: usize,
}

impl Rows {
    fn row(&mut self, row: line::Row, addrs: &[u64], local: &mut [Local<'_>]) {
        if let Some((start, file, line)) = self.current
            && row.address > start
        {
            while self.next < addrs.len() && addrs[self.next] < row.address {
                if addrs[self.next] >= start {
                    let line = u32::try_from(line).unwrap_or(0);
                    local[self.next].row.get_or_insert((file, line));
                }
                self.next += 1;
            }
        }
        if row.end_sequence {
            self.current = None;
            return;
        }
        if self.current.is_none_or(|(start, ..)| row.address < start) {
            self.next = addrs.partition_point(|a| *a < row.address);
        }
        self.current = Some((row.address, row.file, row.line));
    }
}

/// The file names of one unit's line program, rendered on demand.
#[derive(Default)]
struct FileNames<'a> {
    header: Option<gimli::LineProgramHeader<R<'a>>>,
    rendered: HashMap<u64, String>,
}

impl<'a> FileNames<'a> {
    fn name(&mut self, unit: UnitRef<'_, 'a>, index: u64) -> String {
        let Some(header) = &self.header else {
            return String::new();
        };
        self.rendered
            .entry(index)
            .or_insert_with(|| {
                header
                    .file(index)
                    .and_then(|file| render_file(unit, file, header).ok())
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// A file's path as `addr2line` renders it: the unit's directory, the
/// file's directory, the file name, each replacing what came before when
/// absolute.
fn render_file<'a>(
    unit: UnitRef<'_, 'a>,
    file: &gimli::FileEntry<R<'a>>,
    header: &gimli::LineProgramHeader<R<'a>>,
) -> gimli::Result<String> {
    let mut path = match unit.comp_dir {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => String::new(),
    };
    // Directory 0 is the unit's own directory.
    if file.directory_index() != 0
        && let Some(directory) = file.directory(header)
    {
        path_push(&mut path, &unit.attr_string(directory)?.to_string_lossy());
    }
    path_push(
        &mut path,
        &unit.attr_string(file.path_name())?.to_string_lossy(),
    );
    Ok(path)
}

fn path_push(path: &mut String, p: &str) {
    let rooted = |p: &str| {
        p.starts_with('/')
            || p.starts_with('\\')
            || p.get(1..3) == Some(":/")
            || p.get(1..3) == Some(":\\")
    };
    if rooted(p) {
        *path = p.to_owned();
    } else {
        let separator = if path.starts_with('\\') || path.get(1..3) == Some(":\\") {
            '\\'
        } else {
            '/'
        };
        if !path.is_empty() && !path.ends_with(separator) {
            path.push(separator);
        }
        path.push_str(p);
    }
}

/// Units parsed only to read an entry another unit refers to.
#[derive(Default)]
struct OtherUnits<'a> {
    units: Vec<gimli::Unit<R<'a>>>,
    /// Every unit's `.debug_info` range, sorted, made on the first
    /// reference into another unit (LTO builds have many).
    index: Option<Vec<Range<usize>>>,
}

/// The name an entry's `Name` leads to (the mangled linkage name when
/// there is one), following references across entries and units.
fn name_of<'a>(
    unit: UnitRef<'_, 'a>,
    name: Name<'a>,
    memo: &mut HashMap<usize, Option<String>>,
    others: &mut OtherUnits<'a>,
) -> Option<String> {
    others.make_room();
    let mut name = name;
    // Where the entry being read lives: `None` for `unit`, else `others`.
    let mut in_other: Option<usize> = None;
    let mut seen = Vec::new();
    let mut found = None;
    for _ in 0..MAX_NAME_HOPS {
        let (target, offset) = match name {
            Name::None => break,
            Name::Here(value, _) => {
                let read_in = match in_other {
                    Some(i) => others.units[i].unit_ref(unit.dwarf),
                    None => unit,
                };
                found = read_in
                    .attr_string(value)
                    .ok()
                    .map(|s| s.to_string_lossy().into_owned());
                break;
            }
            Name::There(AttributeValue::UnitRef(offset)) => (in_other, offset),
            Name::There(AttributeValue::DebugInfoRef(at)) => {
                let Some(i) = others.find(unit.dwarf, at) else {
                    break;
                };
                let Some(offset) = at.to_unit_offset(&others.units[i].header) else {
                    break;
                };
                (Some(i), offset)
            }
            Name::There(_) => break,
        };
        let target_unit = match target {
            Some(i) => others.units[i].unit_ref(unit.dwarf),
            None => unit,
        };
        let key = offset
            .to_debug_info_offset(&target_unit.header)
            .map_or(usize::MAX, |o| o.0);
        if let Some(known) = memo.get(&key) {
            found = known.clone();
            break;
        }
        seen.push(key);
        let Some(next) = entry_name(target_unit, offset) else {
            break;
        };
        name = next;
        in_other = target;
    }
    for key in seen {
        memo.insert(key, found.clone());
    }
    found
}

/// The `Name` attributes of the entry at `offset`.
fn entry_name<'a>(unit: UnitRef<'_, 'a>, offset: gimli::UnitOffset) -> Option<Name<'a>> {
    let mut entries = unit.entries_raw(Some(offset)).ok()?;
    let abbrev = entries.read_abbreviation().ok()??;
    let mut name = Name::None;
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec).ok()?;
        match attr.name() {
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                name.linkage(attr.value());
            }
            gimli::DW_AT_name => name.plain(attr.value()),
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                name.origin(attr.value());
            }
            _ => {}
        }
    }
    Some(name)
}

impl<'a> OtherUnits<'a> {
    /// Forget the parsed units when there are many (only between lookups,
    /// so that indices handed out stay valid during one).
    fn make_room(&mut self) {
        if self.units.len() >= MAX_OTHER_UNITS {
            self.units.clear();
        }
    }

    /// The index of the parsed unit holding `target`, parsing it if needed.
    fn find(&mut self, dwarf: &Dwarf<'a>, target: DebugInfoOffset) -> Option<usize> {
        let holds = |header: &gimli::UnitHeader<R<'a>>| {
            header.debug_info_offset().is_some_and(|start| {
                start.0 <= target.0 && target.0 < start.0 + header.length_including_self()
            })
        };
        if let Some(i) = self.units.iter().position(|u| holds(&u.header)) {
            return Some(i);
        }
        let index = self.index.get_or_insert_with(|| {
            let mut index = Vec::new();
            let mut units = dwarf.units();
            while let Ok(Some(header)) = units.next() {
                if let Some(start) = header.debug_info_offset() {
                    index.push(start.0..start.0 + header.length_including_self());
                }
            }
            index.sort_unstable_by_key(|r| r.start);
            index
        });
        let at = index.partition_point(|r| r.end <= target.0);
        let start = index.get(at).filter(|r| r.contains(&target.0))?.start;
        let header = dwarf.unit_header(DebugInfoOffset(start)).ok()?;
        self.units.push(dwarf.unit(header).ok()?);
        Some(self.units.len() - 1)
    }
}

/// The DWARF sections of one file: read in place, or inflated on demand
/// into a sparse anonymous mapping.
struct Store<'a> {
    sections: Vec<(SectionId, Slot<'a>)>,
}

enum Slot<'a> {
    Plain(&'a [u8]),
    Sparse(Sparse<'a>),
    /// Compressed in a way we cannot read, or too large to inflate whole.
    Unusable,
}

struct Sparse<'a> {
    stream: &'a [u8],
    map: memmap2::MmapMut,
    /// The inflated ranges, sorted and disjoint.
    filled: Vec<Range<usize>>,
    /// Where inflating can resume, ascending, one every
    /// [`CHECKPOINT_EVERY`] bytes of output so far reached.
    checkpoints: Vec<Checkpoint>,
}

/// The last 32 KiB of output, which deflate's back references reach.
const WINDOW: usize = 32 << 10;

/// How much output lies between two checkpoints: a lookup that needs a
/// unit far into a section inflates from the checkpoint before it, not
/// from the section's start. ~43 KiB a checkpoint; libc's debug info
/// (8 MiB inflated) needs about 16.
const CHECKPOINT_EVERY: usize = 512 << 10;

/// A point inflating can resume from: the inflater's state, its window,
/// how far into the stream and into the output it was.
#[derive(Clone)]
struct Checkpoint {
    state: Box<miniz_oxide::inflate::core::DecompressorOxide>,
    window: Box<[u8]>,
    consumed: usize,
    produced: usize,
}

impl<'a> Store<'a> {
    /// The file's DWARF sections; compressed ones start from what `kept`
    /// holds of them from earlier lookups.
    fn new(file: &ElfFile<'a>, kept: &Kept) -> Option<Self> {
        let mut inflated = kept.take_inflated();
        let mut sections = Vec::new();
        for id in [
            SectionId::DebugAbbrev,
            SectionId::DebugAddr,
            SectionId::DebugAranges,
            SectionId::DebugInfo,
            SectionId::DebugLine,
            SectionId::DebugLineStr,
            SectionId::DebugStr,
            SectionId::DebugStrOffsets,
            SectionId::DebugRanges,
            SectionId::DebugRngLists,
        ] {
            let slot = match file.section(id.name()) {
                None => continue,
                Some(SectionBytes::Plain(bytes)) => Slot::Plain(bytes),
                Some(SectionBytes::Zlib { stream, size }) => {
                    let earlier = inflated
                        .iter()
                        .position(|(i, map, ..)| *i == id && map.len() == size)
                        .map(|at| inflated.swap_remove(at));
                    match earlier {
                        Some((_, map, filled, checkpoints)) => Slot::Sparse(Sparse {
                            stream,
                            map,
                            filled,
                            checkpoints,
                        }),
                        None => match memmap2::MmapMut::map_anon(size) {
                            Ok(map) => Slot::Sparse(Sparse {
                                stream,
                                map,
                                filled: Vec::new(),
                                checkpoints: Vec::new(),
                            }),
                            Err(_) => Slot::Unusable,
                        },
                    }
                }
            };
            sections.push((id, slot));
        }
        sections
            .iter()
            .any(|(id, _)| *id == SectionId::DebugInfo)
            .then_some(Store { sections })
    }

    /// Hand what was inflated back to `kept`, for the next lookup.
    fn keep_inflated(self, kept: &Kept) {
        let inflated = self
            .sections
            .into_iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Sparse(sparse) => Some((id, sparse.map, sparse.filled, sparse.checkpoints)),
                _ => None,
            })
            .collect();
        kept.put_inflated(inflated);
    }

    fn slot(&self, id: SectionId) -> Option<&Slot<'a>> {
        self.sections.iter().find(|(i, _)| *i == id).map(|(_, s)| s)
    }

    fn slot_mut(&mut self, id: SectionId) -> Option<&mut Slot<'a>> {
        self.sections
            .iter_mut()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
    }

    fn bytes(&self, id: SectionId) -> &[u8] {
        match self.slot(id) {
            Some(Slot::Plain(bytes)) => bytes,
            Some(Slot::Sparse(sparse)) => &sparse.map,
            _ => &[],
        }
    }

    fn is_sparse(&self, id: SectionId) -> bool {
        matches!(self.slot(id), Some(Slot::Sparse(_)))
    }

    fn dwarf(&self) -> Dwarf<'_> {
        let loaded: Result<Dwarf<'_>, ()> =
            gimli::Dwarf::load(|id| Ok(EndianSlice::new(self.bytes(id), NativeEndian)));
        loaded.unwrap_or_default()
    }

    /// Make a compressed section readable whole (for sections read at
    /// random offsets); false when that is impossible or too costly.
    fn fill_whole(&mut self, id: SectionId) -> bool {
        match self.slot_mut(id) {
            Some(Slot::Sparse(sparse)) => {
                let len = sparse.map.len();
                len <= MAX_WHOLE_INFLATE && sparse.fill(std::slice::from_ref(&(0..len)))
            }
            Some(Slot::Unusable) => false,
            _ => true,
        }
    }

    /// Inflate the length-prefixed records (units, line programs) that
    /// start at `starts`.
    fn fill_lengths(&mut self, id: SectionId, starts: &[usize]) {
        let Some(Slot::Sparse(sparse)) = self.slot_mut(id) else {
            return;
        };
        let heads: Vec<Range<usize>> = starts.iter().map(|s| *s..s.saturating_add(12)).collect();
        sparse.fill(&heads);
        let whole: Vec<Range<usize>> = starts
            .iter()
            .filter_map(|&s| {
                let mut r = EndianSlice::new(sparse.map.get(s..)?, NativeEndian);
                let (length, format) = r.read_initial_length().ok()?;
                let header = if format == gimli::Format::Dwarf64 {
                    12
                } else {
                    4
                };
                Some(s..s.saturating_add(header).saturating_add(length))
            })
            .collect();
        sparse.fill(&whole);
    }

    /// Inflate the abbreviation tables at `starts`, growing each until it
    /// is seen to end.
    fn fill_abbreviations(&mut self, starts: &[usize]) {
        let Some(Slot::Sparse(sparse)) = self.slot_mut(SectionId::DebugAbbrev) else {
            return;
        };
        let len = sparse.map.len();
        let mut pending: Vec<usize> = starts.to_vec();
        let mut chunk = 16 << 10;
        for _ in 0..8 {
            if pending.is_empty() {
                break;
            }
            let wanted: Vec<Range<usize>> = pending
                .iter()
                .map(|&s| s..s.saturating_add(chunk).min(len))
                .collect();
            if !sparse.fill(&wanted) {
                return;
            }
            pending.retain(|&s| {
                let end = sparse.filled_end(s);
                end < len && abbreviation_table_len(&sparse.map[s..end]).is_none()
            });
            chunk = chunk.saturating_mul(4);
        }
    }
}

impl Sparse<'_> {
    /// The end of the filled stretch that starts at or before `at`.
    fn filled_end(&self, at: usize) -> usize {
        self.filled
            .iter()
            .find(|r| r.contains(&at))
            .map_or(at, |r| r.end)
    }

    /// Inflate the stream once, from the checkpoint before the first part
    /// of `wanted` not yet filled, copying out those parts. False when the
    /// stream is broken.
    fn fill(&mut self, wanted: &[Range<usize>]) -> bool {
        use miniz_oxide::inflate::TINFLStatus;
        use miniz_oxide::inflate::core::inflate_flags::{
            TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_IGNORE_ADLER32, TINFL_FLAG_PARSE_ZLIB_HEADER,
        };
        let len = self.map.len();
        let mut todo: Vec<Range<usize>> = Vec::new();
        for r in wanted {
            let r = r.start.min(len)..r.end.min(len);
            for gap in gaps(&self.filled, r) {
                todo.push(gap);
            }
        }
        if todo.is_empty() {
            return true;
        }
        todo.sort_unstable_by_key(|r| r.start);
        let todo = merge(todo);
        let (first, last) = (todo[0].start, todo.last().map_or(0, |r| r.end));
        let mut here = match self.checkpoints.iter().rev().find(|c| c.produced <= first) {
            Some(checkpoint) => checkpoint.clone(),
            None => Checkpoint {
                state: Box::default(),
                window: vec![0; WINDOW].into_boxed_slice(),
                consumed: 0,
                produced: 0,
            },
        };
        let flags =
            TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_HAS_MORE_INPUT | TINFL_FLAG_IGNORE_ADLER32;
        let mut next = 0usize; // first range of `todo` not finished
        while here.produced < last {
            let Some(input) = self.stream.get(here.consumed..) else {
                return false;
            };
            let at = here.produced % WINDOW;
            let (status, read, written) = miniz_oxide::inflate::core::decompress(
                &mut here.state,
                input,
                &mut here.window,
                at,
                flags,
            );
            // The bytes written are window[at..at + written], wrapping.
            let chunk = here.produced..here.produced + written;
            while let Some(r) = todo.get(next) {
                let (mut from, to) = (r.start.max(chunk.start), r.end.min(chunk.end));
                while from < to {
                    let w = from % WINDOW;
                    let n = (to - from).min(WINDOW - w);
                    self.map[from..from + n].copy_from_slice(&here.window[w..w + n]);
                    from += n;
                }
                if r.end <= chunk.end {
                    next += 1;
                } else {
                    break;
                }
            }
            here.consumed += read;
            here.produced += written;
            let reached = self.checkpoints.last().map_or(0, |c| c.produced);
            if here.produced >= reached + CHECKPOINT_EVERY {
                self.checkpoints.push(here.clone());
            }
            match status {
                TINFLStatus::Done => break,
                TINFLStatus::HasMoreOutput | TINFLStatus::NeedsMoreInput
                    if read > 0 || written > 0 => {}
                TINFLStatus::HasMoreOutput | TINFLStatus::NeedsMoreInput => break,
                _ => return false,
            }
        }
        let reached = here.produced;
        let mut filled = std::mem::take(&mut self.filled);
        filled.extend(todo.into_iter().map(|r| r.start..r.end.min(reached)));
        filled.sort_unstable_by_key(|r| r.start);
        self.filled = merge(filled);
        true
    }
}

/// The parts of `r` not covered by `filled` (sorted, disjoint).
fn gaps(filled: &[Range<usize>], r: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = r.start;
    for f in filled {
        if f.end <= start {
            continue;
        }
        if f.start >= r.end {
            break;
        }
        if f.start > start {
            out.push(start..f.start);
        }
        start = start.max(f.end);
    }
    if start < r.end {
        out.push(start..r.end);
    }
    out
}

/// Sorted ranges with overlapping or touching ones joined.
fn merge(sorted: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        if r.start >= r.end {
            continue;
        }
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The length of the abbreviation table at the start of `bytes`, or
/// `None` when it runs past their end.
fn abbreviation_table_len(bytes: &[u8]) -> Option<usize> {
    let mut r = EndianSlice::new(bytes, NativeEndian);
    loop {
        if r.read_uleb128().ok()? == 0 {
            return Some(bytes.len() - r.len());
        }
        r.read_uleb128().ok()?; // tag
        r.read_u8().ok()?; // children
        loop {
            let name = r.read_uleb128().ok()?;
            let form = r.read_uleb128().ok()?;
            if form == u64::from(gimli::DW_FORM_implicit_const.0) {
                r.read_sleb128().ok()?;
            }
            if name == 0 && form == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_inlined_calls() {
        let found = Found {
            function: Some(Some("outer".into())),
            inlined: vec![
                Inlined {
                    name: Some("middle".into()),
                    call_file: "a.rs".into(),
                    call_line: 10,
                },
                Inlined {
                    name: Some("inner".into()),
                    call_file: "b.rs".into(),
                    call_line: 20,
                },
            ],
            location: Some(("c.rs".into(), 30)),
        };
        let frames: Vec<_> = found
            .into_frames()
            .into_iter()
            .map(|f| (f.name.unwrap_or_default(), f.file, f.line))
            .collect();
        assert_eq!(
            frames,
            [
                ("inner".to_owned(), "c.rs".to_owned(), 30),
                ("middle".to_owned(), "b.rs".to_owned(), 20),
                ("outer".to_owned(), "a.rs".to_owned(), 10),
            ]
        );
    }

    /// Call `f` with this test binary's DWARF.
    fn with_own_dwarf(f: impl FnOnce(&Dwarf<'_>)) {
        let file = std::fs::File::open("/proc/self/exe").expect("own executable");
        let map = crate::signals::map_file(&file).expect("mapped");
        let elf = ElfFile::parse(&map).expect("ELF");
        let store = Store::new(&elf, &Kept::new()).expect("DWARF");
        f(&store.dwarf());
    }

    /// `root_ranges` reads a unit's first entry by hand; gimli's own
    /// `unit_ranges` must agree on every unit of this test binary.
    #[test]
    fn root_ranges_agree_with_gimli() {
        with_own_dwarf(|dwarf| {
            let mut units = dwarf.units();
            let mut compared = 0;
            // The first few hundred units: enough kinds of them, little CPU.
            while let Ok(Some(header)) = units.next()
                && compared < 300
            {
                let mut ours = Vec::new();
                root_ranges(dwarf, &header, |r| ours.push(r)).expect("our read");
                let unit = dwarf.unit(header).expect("unit");
                let mut theirs = Vec::new();
                let mut ranges = unit.unit_ref(dwarf).unit_ranges().expect("ranges");
                while let Some(r) = ranges.next().expect("range") {
                    if r.begin < r.end {
                        theirs.push(r.begin..r.end);
                    }
                }
                assert_eq!(
                    ours,
                    theirs,
                    "unit at {:?}",
                    unit.header.debug_info_offset()
                );
                compared += 1;
            }
            assert!(compared > 100, "{compared} units");
        });
    }

    /// A lookup in units walked before walks only the functions holding its
    /// addresses, from the kept index: the answers must be the same as a
    /// whole walk's.
    #[test]
    fn lookups_from_the_function_index_match_whole_walks() {
        let file = std::fs::File::open("/proc/self/exe").expect("own executable");
        let map = crate::signals::map_file(&file).expect("mapped");
        let elf = ElfFile::parse(&map).expect("ELF");
        let mut all = elf.function_midpoints();
        all.sort_unstable();
        all.dedup();
        // Some two dozen addresses around this test's own code and around a
        // dependency's (another crate is another unit, however the build
        // splits this one): a few units, at little CPU.
        let bias = crate::signals::images().first().map_or(0, |i| i.bias);
        let here = (lookups_from_the_function_index_match_whole_walks as fn() as usize as u64)
            .wrapping_sub(bias);
        let there = (rustc_demangle::demangle as fn(&str) -> rustc_demangle::Demangle<'_> as usize
            as u64)
            .wrapping_sub(bias);
        let around = |center: u64| -> Vec<u64> {
            let near: Vec<u64> = all
                .iter()
                .copied()
                .filter(|a| a.abs_diff(center) < 1 << 16)
                .collect();
            near.iter().copied().step_by(near.len() / 12 + 1).collect()
        };
        let mut sample = around(here);
        sample.extend(around(there));
        sample.sort_unstable();
        sample.dedup();
        let whole = resolve(&elf, &sample, &Kept::new());
        assert!(whole.iter().filter(|f| f.function.is_some()).count() > sample.len() / 2);
        let kept = Kept::new();
        let even: Vec<usize> = (0..sample.len()).step_by(2).collect();
        let odd: Vec<usize> = (1..sample.len()).step_by(2).collect();
        let first: Vec<u64> = even.iter().map(|&i| sample[i]).collect();
        let second: Vec<u64> = odd.iter().map(|&i| sample[i]).collect();
        let first_found = resolve(&elf, &first, &kept);
        let walked = kept.functions.lock().map(|f| f.by_unit.len()).unwrap_or(0);
        assert!(walked >= 2, "{walked} units indexed");
        let second_found = resolve(&elf, &second, &kept);
        for (&i, found) in even.iter().zip(first_found) {
            assert_eq!(found, whole[i], "{:#x}", sample[i]);
        }
        for (&i, found) in odd.iter().zip(second_found) {
            assert_eq!(found, whole[i], "{:#x} (from the index)", sample[i]);
        }
    }

    /// A compressed section filled in pieces, later pieces resuming from
    /// checkpoints (and one reaching back before the last of them), holds
    /// exactly the original bytes where it was filled.
    #[test]
    fn sparse_inflation_resumes_from_checkpoints() {
        use std::io::Write;
        // 1.5 MiB that differ from block to block: three checkpoints.
        let block: Vec<u8> = (0u8..=255).collect();
        let mut original = Vec::with_capacity(3 << 19);
        for i in 0..(3 << 19) / 256 {
            original.extend_from_slice(&block[i % 256..]);
            original.extend_from_slice(&block[..i % 256]);
        }
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&original).expect("compress");
        let stream = zlib.finish().expect("compress");
        let mut sparse = Sparse {
            stream: &stream,
            map: memmap2::MmapMut::map_anon(original.len()).expect("anonymous map"),
            filled: Vec::new(),
            checkpoints: Vec::new(),
        };
        let pieces = [
            1_000_000..1_000_100,
            100..200,
            1_400_000..1_500_000,
            700_000..800_000,
            1_550_000..1_572_864,
        ];
        for piece in &pieces {
            assert!(sparse.fill(std::slice::from_ref(piece)));
        }
        assert!(
            sparse.checkpoints.len() >= 2,
            "{}",
            sparse.checkpoints.len()
        );
        for piece in pieces {
            assert_eq!(
                &sparse.map[piece.clone()],
                &original[piece.clone()],
                "{piece:?}"
            );
        }
        // Unfilled bytes stay zero (their pages untouched).
        assert!(sparse.map[500_000..500_100].iter().all(|b| *b == 0));
    }

    /// Our line-program runner gives gimli's rows, run whole, and each
    /// sequence run alone from its noted offset gives that sequence's rows.
    #[test]
    fn line_sequences_run_alone_as_gimli_runs_them_whole() {
        with_own_dwarf(|dwarf| {
            let mut units = dwarf.units();
            let (mut programs, mut sequences_seen) = (0, 0);
            while let Ok(Some(header)) = units.next()
                && programs < 40
            {
                let unit = dwarf.unit(header).expect("unit");
                let Some(program) = unit.line_program.clone() else {
                    continue;
                };
                let mut theirs = Vec::new();
                let mut rows = program.clone().rows();
                while let Some((_, row)) = rows.next_row().expect("gimli's rows") {
                    theirs.push(line::Row {
                        address: row.address(),
                        file: row.file_index(),
                        line: row.line().map_or(0, std::num::NonZeroU64::get),
                        end_sequence: row.end_sequence(),
                    });
                }
                let vm = line::Program::new(program.header()).expect("a plain encoding");
                let (mut ours, mut sequences) = (Vec::new(), Vec::new());
                vm.run(0, false, |r| ours.push(r), |s| sequences.push(s));
                assert_eq!(
                    ours,
                    theirs,
                    "unit at {:?}",
                    unit.header.debug_info_offset()
                );
                let whole: Vec<&[line::Row]> = ours
                    .split_inclusive(|r| r.end_sequence)
                    .filter(|s| s.len() > 1 && s[0].address < s[s.len() - 1].address)
                    .collect();
                assert_eq!(whole.len(), sequences.len());
                for (rows, sequence) in whole.into_iter().zip(&sequences) {
                    let mut alone = Vec::new();
                    vm.run(sequence.offset, true, |r| alone.push(r), |_| {});
                    assert_eq!(alone, rows);
                    assert_eq!(
                        (sequence.start, sequence.end),
                        (rows[0].address, rows[rows.len() - 1].address)
                    );
                }
                programs += 1;
                sequences_seen += sequences.len();
            }
            assert!(
                programs > 20 && sequences_seen > 100,
                "{programs} {sequences_seen}"
            );
        });
    }

    #[test]
    fn ranges_arithmetic() {
        assert_eq!(gaps(&[2..4, 6..8], 0..10), vec![0..2, 4..6, 8..10]);
        assert_eq!(
            gaps(std::slice::from_ref(&(0..10)), 2..4),
            Vec::<Range<usize>>::new()
        );
        assert_eq!(merge(vec![0..2, 2..3, 5..6, 5..9]), vec![0..3, 5..9]);
    }

    #[test]
    fn abbreviation_tables_are_measured() {
        // code 1, tag 0x11, children yes, (name 0x03, form 0x08), (0, 0); end 0
        let table = [1, 0x11, 1, 0x03, 0x08, 0, 0, 0, 0xff];
        assert_eq!(abbreviation_table_len(&table), Some(8));
        assert_eq!(abbreviation_table_len(&table[..5]), None);
    }

    #[test]
    fn paths_join_like_addr2line() {
        let mut p = "/work".to_owned();
        path_push(&mut p, "src");
        path_push(&mut p, "lib.rs");
        assert_eq!(p, "/work/src/lib.rs");
        path_push(&mut p, "/rustc/abc/library/core/src/ops.rs");
        assert_eq!(p, "/rustc/abc/library/core/src/ops.rs");
    }
}
