//! Drops this process's resident pages of its program and shared libraries
//! that it has not modified, so code that only loading runs stops counting
//! in its resident memory.
//!
//! Loading a model runs code that decoding never runs again: argument
//! parsing, JSON, the GGUF metadata, the tokenizer's build. Its pages stay
//! mapped, and resident, until the process exits (on SmolLM2 Q4_0, 2.8 MiB
//! of the program's 6 MiB; `docs/performance.md`). They are clean copies of
//! files in the page cache, so this process can let go of them at any time
//! (`madvise(MADV_DONTNEED)`): a page touched again is mapped back from the
//! page cache by a minor fault, with the same bytes.
//!
//! Only mappings of the files this process executes from (the program and
//! its shared libraries) are dropped, and of those only the ones without
//! write permission and without a private, copied-on-write page: the
//! relocated read-only data (RELRO) and every writable segment are kept,
//! and so is every other file mapping (a model read in place). Linux only
//! (it reads `/proc/self/smaps`); elsewhere it does nothing.

use std::collections::HashSet;
use std::ops::Range;

/// Drops the clean, read-only pages of this process's program and shared
/// libraries (see the module docs); returns the bytes of address space
/// advised (resident or not). Nothing is dropped where the mappings cannot
/// be read.
pub fn drop_clean_program_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut advised = 0;
        for range in clean_program_ranges(&smaps) {
            let len = range.end - range.start;
            // SAFETY: `range` is a whole mapping of a file, without write
            // permission and with no private page, so every page in it is an
            // unmodified copy of the file: MADV_DONTNEED only unmaps them and
            // the next access maps the same bytes back from the page cache.
            // The memory stays mapped, so no reference into it dangles.
            let done = unsafe {
                libc::madvise(range.start as *mut libc::c_void, len, libc::MADV_DONTNEED)
            };
            if done == 0 {
                advised += len;
            }
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// One mapping read from `/proc/self/smaps`.
struct Mapping<'a> {
    range: Range<usize>,
    perms: &'a str,
    path: &'a str,
    anonymous_kb: Option<u64>,
}

/// The mappings of `smaps` (the text of `/proc/<pid>/smaps`) that
/// [`drop_clean_program_pages`] may drop: of a file some mapping executes,
/// not writable, with `Anonymous: 0 kB`.
fn clean_program_ranges(smaps: &str) -> Vec<Range<usize>> {
    let mappings = parse_smaps(smaps);
    let programs: HashSet<&str> = mappings
        .iter()
        .filter(|m| m.perms.contains('x') && m.path.starts_with('/'))
        .map(|m| m.path)
        .collect();
    mappings
        .into_iter()
        .filter(|m| {
            programs.contains(m.path)
                && m.perms.starts_with('r')
                && !m.perms.contains('w')
                && m.anonymous_kb == Some(0)
        })
        .map(|m| m.range)
        .collect()
}

/// The mappings in `smaps`: a header line (`start-end perms offset dev
/// inode [path]`) followed by `Field: value` lines. Lines that are neither
/// are skipped.
fn parse_smaps(smaps: &str) -> Vec<Mapping<'_>> {
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.ends_with(':') {
            if let ("Anonymous:", Some(last)) = (first, mappings.last_mut()) {
                last.anonymous_kb = words.next().and_then(|kb| kb.parse().ok());
            }
            continue;
        }
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let perms = words.next().unwrap_or("");
        // After range, perms, offset, device and inode: the path, which may
        // hold spaces.
        let mut rest = line;
        for _ in 0..5 {
            let field_end = rest.trim_start().find(char::is_whitespace);
            let skipped = rest.len() - rest.trim_start().len();
            rest = field_end.map_or("", |end| &rest[skipped + end..]);
        }
        let path = rest.trim();
        mappings.push(Mapping {
            range: start..end,
            perms,
            path,
            anonymous_kb: None,
        });
    }
    mappings
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55ca9fb8c000-55ca9fef4000 r--p 00000000 fe:00 5310827                    /opt/k/kaiyuan
Rss:                 832 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
55ca9fef4000-55caa0c21000 r-xp 00367000 fe:00 5310827                    /opt/k/kaiyuan
Anonymous:             0 kB
55caa0c21000-55caa0cd3000 r--p 01093000 fe:00 5310827                    /opt/k/kaiyuan
Anonymous:           712 kB
55caa0cd3000-55caa0cdc000 rw-p 01144000 fe:00 5310827                    /opt/k/kaiyuan
Anonymous:            20 kB
7fd69adb9000-7fd69f600000 r--p 00000000 fe:00 77                         /models/my model.gguf
Anonymous:             0 kB
7fd6ab785000-7fd6abf18000 rw-p 00000000 00:00 0 
Anonymous:          7756 kB
7f7ef53f9000-7f7ef541f000 r--p 00000000 fe:00 326279                     /usr/lib/libc.so.6
Anonymous:             0 kB
7f7ef541f000-7f7ef5575000 r-xp 00026000 fe:00 326279                     /usr/lib/libc.so.6
Anonymous:             0 kB
7f7ef55c8000-7f7ef55cc000 r--p 001ce000 fe:00 326279                     /usr/lib/libc.so.6
Anonymous:            16 kB
7ffcbaa06000-7ffcbaa27000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            72 kB
7ffcbab8e000-7ffcbab90000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_executed_files_are_dropped() {
        let ranges = clean_program_ranges(SMAPS);
        assert_eq!(
            ranges,
            vec![
                0x55ca9fb8c000..0x55ca9fef4000,
                0x55ca9fef4000..0x55caa0c21000,
                0x7f7ef53f9000..0x7f7ef541f000,
                0x7f7ef541f000..0x7f7ef5575000,
            ],
            "program and libc text and read-only data; not RELRO, writable \
             segments, the model file, the heap, the stack or the vDSO"
        );
    }

    #[test]
    fn paths_with_spaces_and_malformed_lines_are_handled() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings[4].path, "/models/my model.gguf");
        assert_eq!(mappings[5].path, "");
        assert!(parse_smaps("garbage\nzz-yy r--p\n\n").is_empty());
        // A mapping whose Anonymous line is missing is not dropped.
        let text = "1000-2000 r-xp 00000000 fe:00 1 /bin/x\n";
        assert!(clean_program_ranges(text).is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn dropping_this_process_pages_leaves_it_working() {
        let advised = drop_clean_program_pages();
        assert!(advised > 0, "the test binary's own code is a clean mapping");
        // Code and read-only data fault back in: format, sort, hash.
        let mut words: Vec<String> = (0..1000).map(|i| format!("{:x}", i * 7919)).collect();
        words.sort();
        let set: HashSet<&String> = words.iter().collect();
        assert_eq!(set.len(), 1000);
    }
}
