//! A unit's line-number program, run from the start of any one of its
//! sequences. gimli runs a program only from its beginning, so every lookup
//! in a unit would run all of it; with the sequences' addresses and byte
//! offsets noted on the first run (24 bytes a sequence, about one a
//! function), a later lookup runs only the sequences that hold its
//! addresses. The rows are the ones gimli's `LineRows` gives (same
//! opcodes, same tombstone rule; a test compares them on real units).

use gimli::{EndianSlice, LineProgramHeader, NativeEndian, Reader};

type R<'a> = EndianSlice<'a, NativeEndian>;

/// One sequence: the addresses it covers and where its opcodes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sequence {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) offset: usize,
}

/// One row of the line table: an address, its file index and line (0 when
/// none), and whether it ends its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) address: u64,
    pub(super) file: u64,
    pub(super) line: u64,
    pub(super) end_sequence: bool,
}

/// The encoding a program's opcodes need, from its header.
pub(super) struct Program<'a> {
    opcodes: &'a [u8],
    minimum_instruction_length: u64,
    line_base: i64,
    line_range: u8,
    opcode_base: u8,
    standard_opcode_lengths: &'a [u8],
    address_size: u8,
}

impl<'a> Program<'a> {
    /// `None` for encodings this runner does not handle (VLIW programs
    /// with several operations an instruction, a zero line range): the
    /// caller runs gimli's rows instead.
    pub(super) fn new(header: &LineProgramHeader<R<'a>>) -> Option<Self> {
        let encoding = header.line_encoding();
        if encoding.maximum_operations_per_instruction != 1 || encoding.line_range == 0 {
            return None;
        }
        Some(Program {
            opcodes: header.raw_program_buf().slice(),
            minimum_instruction_length: u64::from(encoding.minimum_instruction_length),
            line_base: i64::from(encoding.line_base),
            line_range: encoding.line_range,
            opcode_base: header.opcode_base(),
            standard_opcode_lengths: header.standard_opcode_lengths().slice(),
            address_size: header.address_size(),
        })
    }

    /// Run from byte `from` of the opcodes (0, or a sequence's offset),
    /// calling `row` for each row, and `sequence` at the end of each
    /// sequence that had rows; with `one`, stop after the first sequence.
    /// Stops early on malformed opcodes, as gimli's rows end on an error.
    pub(super) fn run(
        &self,
        from: usize,
        one: bool,
        mut row: impl FnMut(Row),
        mut sequence: impl FnMut(Sequence),
    ) {
        let Some(opcodes) = self.opcodes.get(from..) else {
            return;
        };
        let mut input = EndianSlice::new(opcodes, NativeEndian);
        let total = self.opcodes.len();
        // Registers, reset at each sequence's start.
        let (mut address, mut file, mut line, mut tombstone) = (0u64, 1u64, 1u64, false);
        let mut started = from;
        let mut first: Option<u64> = None;
        let min_tombstone = if self.address_size >= 8 {
            u64::MAX - 1
        } else {
            (1u64 << (u32::from(self.address_size) * 8)).wrapping_sub(2)
        };
        while !input.is_empty() {
            let Ok(opcode) = input.read_u8() else {
                return;
            };
            // Some(true): a row that ends its sequence; Some(false): a row.
            let mut emit: Option<bool> = None;
            if opcode >= self.opcode_base {
                let adjusted = opcode - self.opcode_base;
                advance_line(
                    &mut line,
                    self.line_base + i64::from(adjusted % self.line_range),
                );
                if !tombstone {
                    let step = u64::from(adjusted / self.line_range);
                    match self.advance(address, step) {
                        Some(a) => address = a,
                        None => return,
                    }
                }
                emit = Some(false);
            } else if opcode == 0 {
                let Ok(length) = input.read_uleb128() else {
                    return;
                };
                let Ok(length) = usize::try_from(length) else {
                    return;
                };
                let Ok(mut rest) = input.split(length) else {
                    return;
                };
                match rest.read_u8() {
                    Ok(1) => emit = Some(true),
                    Ok(2) => {
                        let Ok(to) = rest.read_address(self.address_size) else {
                            return;
                        };
                        // gimli's rule: an address below the current one, or
                        // at the top of the address space, is a tombstone.
                        tombstone = to < address || to >= min_tombstone;
                        if !tombstone {
                            address = to;
                        }
                    }
                    // define_file (DWARF <= 4), set_discriminator, others:
                    // nothing the rows keep.
                    Ok(_) => {}
                    Err(_) => return,
                }
            } else {
                match opcode {
                    1 => emit = Some(false),
                    2 => {
                        let Ok(n) = input.read_uleb128() else {
                            return;
                        };
                        if !tombstone {
                            match self.advance(address, n) {
                                Some(a) => address = a,
                                None => return,
                            }
                        }
                    }
                    3 => {
                        let Ok(n) = input.read_sleb128() else {
                            return;
                        };
                        advance_line(&mut line, n);
                    }
                    4 => {
                        let Ok(n) = input.read_uleb128() else {
                            return;
                        };
                        file = n;
                    }
                    5 | 12 => {
                        if input.read_uleb128().is_err() {
                            return;
                        }
                    }
                    6 | 7 | 10 | 11 => {}
                    8 => {
                        if !tombstone {
                            let step = u64::from((255 - self.opcode_base) / self.line_range);
                            match self.advance(address, step) {
                                Some(a) => address = a,
                                None => return,
                            }
                        }
                    }
                    9 => {
                        let Ok(n) = input.read_u16() else {
                            return;
                        };
                        if !tombstone {
                            match address.checked_add(u64::from(n)) {
                                Some(a) if self.fits(a) => address = a,
                                _ => return,
                            }
                        }
                    }
                    _ => {
                        let args = self
                            .standard_opcode_lengths
                            .get(usize::from(opcode - 1))
                            .copied()
                            .unwrap_or(0);
                        for _ in 0..args {
                            if input.read_uleb128().is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            if let Some(end_sequence) = emit {
                if !tombstone {
                    row(Row {
                        address,
                        file,
                        line,
                        end_sequence,
                    });
                    if !end_sequence {
                        first.get_or_insert(address);
                    }
                }
                if end_sequence {
                    if let Some(start) = first
                        && !tombstone
                        && start < address
                    {
                        sequence(Sequence {
                            start,
                            end: address,
                            offset: started,
                        });
                    }
                    if one {
                        return;
                    }
                    (address, file, line, tombstone) = (0, 1, 1, false);
                    first = None;
                    started = total - input.len();
                }
            }
        }
    }

    fn advance(&self, address: u64, operations: u64) -> Option<u64> {
        let to = address.checked_add(self.minimum_instruction_length.wrapping_mul(operations))?;
        self.fits(to).then_some(to)
    }

    /// Whether `address` fits the program's address size.
    fn fits(&self, address: u64) -> bool {
        self.address_size >= 8 || address >> (u32::from(self.address_size) * 8) == 0
    }
}

/// gimli's line arithmetic: a decrement stops at 0, an increment wraps.
fn advance_line(line: &mut u64, by: i64) {
    if by < 0 {
        *line = line.saturating_sub(by.unsigned_abs());
    } else {
        *line = line.wrapping_add(by.unsigned_abs());
    }
}
