//! Checks every declaration of this crate against include/hms_ffi/hms_ffi.h with the C compiler.
//!
//! The Rust declarations are translated to C and compiled together with the header as
//! `_Static_assert`s: constant values, struct sizes/alignments/field offsets/field sizes, field
//! types, typedefs and full function prototypes (`__builtin_types_compatible_p`, so `char *` vs
//! `uint8_t *` or a missing `const` fails). The header is also scanned so that a function or
//! constant it has and this crate lacks fails the test. Needs a C compiler (`$CC`, default `cc`).
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use hms_ffi_sys::{CONSTANTS, STRUCT_LAYOUTS};

// ------------------------------------------------------------------ Rust type -> C declarator

#[derive(Debug, Clone)]
enum Ty {
    Named(String),
    Ptr { konst: bool, to: Box<Ty> },
    Array(Box<Ty>, usize),
    Fn { args: Vec<Ty>, ret: Option<Box<Ty>> },
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let st = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(cs[st..i].iter().collect());
        } else if c == '"' {
            let st = i;
            i += 1;
            while cs[i] != '"' {
                i += 1;
            }
            i += 1;
            out.push(cs[st..i].iter().collect());
        } else if c == '-' && cs.get(i + 1) == Some(&'>') {
            out.push("->".into());
            i += 2;
        } else if c == ':' && cs.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

struct P {
    t: Vec<String>,
    i: usize,
}

impl P {
    fn peek(&self) -> &str {
        self.t.get(self.i).map(|s| s.as_str()).unwrap_or("")
    }
    fn next(&mut self) -> String {
        let s = self.t[self.i].clone();
        self.i += 1;
        s
    }
    fn eat(&mut self, s: &str) {
        let got = self.next();
        assert_eq!(got, s, "parse error near token {} of {:?}", self.i, self.t);
    }
    fn ty(&mut self) -> Ty {
        match self.peek() {
            "*" => {
                self.next();
                let k = self.next();
                assert!(k == "const" || k == "mut", "raw pointer needs const/mut: {:?}", self.t);
                Ty::Ptr { konst: k == "const", to: Box::new(self.ty()) }
            }
            "[" => {
                self.next();
                let inner = self.ty();
                self.eat(";");
                let n: usize = self.next().parse().expect("array length");
                self.eat("]");
                Ty::Array(Box::new(inner), n)
            }
            "Option" => {
                self.next();
                self.eat("<");
                let f = self.ty();
                self.eat(">");
                assert!(matches!(f, Ty::Fn { .. }), "Option<> is only used for fn pointers");
                f
            }
            "unsafe" | "extern" => {
                if self.peek() == "unsafe" {
                    self.next();
                }
                self.eat("extern");
                self.eat("\"C\"");
                self.eat("fn");
                let args = self.params();
                let ret = self.ret();
                Ty::Fn { args, ret }
            }
            _ => {
                let mut name = self.next();
                while self.peek() == "::" {
                    self.next();
                    name = self.next();
                }
                Ty::Named(name)
            }
        }
    }
    /// `( [name :] ty, ... )`
    fn params(&mut self) -> Vec<Ty> {
        self.eat("(");
        let mut args = Vec::new();
        while self.peek() != ")" {
            if self.t.get(self.i + 1).map(|s| s.as_str()) == Some(":") {
                self.next();
                self.next();
            }
            args.push(self.ty());
            if self.peek() == "," {
                self.next();
            }
        }
        self.eat(")");
        args
    }
    fn ret(&mut self) -> Option<Box<Ty>> {
        if self.peek() == "->" {
            self.next();
            Some(Box::new(self.ty()))
        } else {
            None
        }
    }
}

fn parse_ty(s: &str) -> Ty {
    let mut p = P { t: tokenize(s), i: 0 };
    let t = p.ty();
    assert_eq!(p.i, p.t.len(), "trailing tokens in type {s}");
    t
}

fn c_base(name: &str) -> String {
    match name {
        "c_char" => "char",
        "c_int" => "int",
        "c_void" => "void",
        "u8" => "uint8_t",
        "i32" => "int32_t",
        "u32" => "uint32_t",
        "i64" => "int64_t",
        "u64" => "uint64_t",
        "usize" => "size_t",
        n if n.starts_with("hms_") => n,
        // the Arrow C Data Interface structs are plain `struct X` in C
        n if n.starts_with("Arrow") => return format!("struct {n}"),
        n => panic!("no C spelling for Rust type {n}: extend c_base()"),
    }
    .to_string()
}

/// A C declaration of `inner` (a declarator: a name, or empty for an abstract one) of type `t`.
fn decl(t: &Ty, inner: &str) -> String {
    match t {
        Ty::Named(n) => format!("{} {}", c_base(n), inner),
        Ty::Ptr { konst, to } => {
            let d = format!("(*{inner})");
            match (&**to, konst) {
                (Ty::Named(n), true) => format!("{} const {}", c_base(n), d),
                (Ty::Ptr { konst: k2, to: t2 }, true) => {
                    // pointer to a const pointer
                    decl(&Ty::Ptr { konst: *k2, to: t2.clone() }, &format!("const {d}"))
                }
                (_, true) => panic!("const pointer to {to:?} not supported"),
                (_, false) => decl(to, &d),
            }
        }
        Ty::Array(of, n) => decl(of, &format!("{inner}[{n}]")),
        Ty::Fn { args, ret } => {
            let a: Vec<String> = args.iter().map(|x| decl(x, "")).collect();
            let a = if a.is_empty() { "void".to_string() } else { a.join(", ") };
            match ret {
                Some(r) => decl(r, &format!("(*{inner})({a})")),
                None => format!("void (*{inner})({a})"),
            }
        }
    }
}

/// A C function type named `name` (not a pointer) for an extern declaration.
fn fn_decl(args: &[Ty], ret: &Option<Box<Ty>>, name: &str) -> String {
    let a: Vec<String> = args.iter().map(|x| decl(x, "")).collect();
    let a = if a.is_empty() { "void".to_string() } else { a.join(", ") };
    match ret {
        Some(r) => decl(r, &format!("({name})({a})")),
        None => format!("void ({name})({a})"),
    }
}

// ------------------------------------------------------------------ reading both sides

fn section<'a>(src: &'a str, begin: &str, end: &str) -> &'a str {
    let b = src.find(begin).unwrap_or_else(|| panic!("marker {begin} missing in src/lib.rs"));
    let e = src.find(end).unwrap_or_else(|| panic!("marker {end} missing in src/lib.rs"));
    &src[b..e]
}

fn strip_comments(s: &str) -> String {
    s.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// (name, args, ret) of every `pub fn` in the extern block.
fn rust_functions(src: &str) -> Vec<(String, Vec<Ty>, Option<Box<Ty>>)> {
    let body = strip_comments(section(src, "// BEGIN FUNCTIONS", "// END FUNCTIONS"));
    let mut out = Vec::new();
    for item in body.split(';') {
        let Some(pos) = item.find("pub fn ") else { continue };
        let mut p = P { t: tokenize(&item[pos + 7..]), i: 0 };
        let name = p.next();
        let args = p.params();
        let ret = p.ret();
        assert_eq!(p.i, p.t.len(), "could not parse declaration of {name}");
        out.push((name, args, ret));
    }
    out
}

fn rust_typedefs(src: &str) -> Vec<(String, Ty)> {
    let body = strip_comments(section(src, "// BEGIN TYPEDEFS", "// END TYPEDEFS"));
    body.split(';')
        .filter_map(|item| {
            let pos = item.find("pub type ")?;
            let rest = &item[pos + 9..];
            let (name, ty) = rest.split_once('=').unwrap();
            Some((name.trim().to_string(), parse_ty(ty.trim())))
        })
        .collect()
}

fn include_dir() -> PathBuf {
    PathBuf::from(env!("HMS_FFI_INCLUDE_DIR"))
}

fn header_text() -> String {
    let h = include_dir().join("hms_ffi/hms_ffi.h");
    std::fs::read_to_string(&h).unwrap_or_else(|e| panic!("cannot read {}: {e}", h.display()))
}

fn header_functions(h: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for chunk in h.split("HMS_API ").skip(1) {
        // skip the `#define HMS_API ...` lines themselves
        let decl = chunk.split(';').next().unwrap();
        if decl.contains("#") {
            continue;
        }
        let before_paren = decl.split('(').next().unwrap();
        let name = before_paren.split(|c: char| !(c.is_alphanumeric() || c == '_')).rfind(|s| !s.is_empty());
        if let Some(n) = name {
            out.insert(n.to_string());
        }
    }
    out
}

/// Integer constants of the header: `#define HMS_X <number or (expr)>` and `HMS_X = <expr>` enum
/// members.
fn header_constants(h: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in h.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#define ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(val)) = (it.next(), it.next()) else { continue };
            // numbers and parenthesized expressions ("(4u << 20)"); not the HMS_API guard macros
            if name.starts_with("HMS_") && val.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '(') {
                out.insert(name.to_string());
            }
        } else if t.starts_with("HMS_") && t.contains(" = ") {
            out.insert(t.split_whitespace().next().unwrap().to_string());
        }
    }
    out
}

// ------------------------------------------------------------------ the check

fn generate_c(src: &str) -> String {
    let mut c = String::from("#include <stddef.h>\n#include <stdint.h>\n#include <hms_ffi/hms_ffi.h>\n");
    c += "#define SAME(a, b) __builtin_types_compatible_p(a, b)\n";
    for (name, value) in CONSTANTS {
        c += &format!("_Static_assert({name} == {value}LL, \"constant {name}: Rust says {value}\");\n");
    }
    for s in STRUCT_LAYOUTS {
        let cn = c_base(s.name);
        let n = cn.as_str();
        c += &format!("_Static_assert(sizeof({n}) == {}, \"sizeof({n}): Rust says {}\");\n", s.size, s.size);
        c += &format!("_Static_assert(_Alignof({n}) == {}, \"alignof({n}): Rust says {}\");\n", s.align, s.align);
        for (f, off, size, ty) in s.fields {
            c += &format!("_Static_assert(offsetof({n}, {f}) == {off}, \"offsetof({n}, {f}): Rust says {off}\");\n");
            c += &format!("_Static_assert(sizeof((({n} *)0)->{f}) == {size}, \"sizeof {n}.{f}: Rust says {size}\");\n");
            let alias = format!("rust_{}_{f}", s.name);
            c += &format!("typedef {};\n", decl(&parse_ty(ty), &alias));
            c += &format!(
                "_Static_assert(SAME({alias}, __typeof__((({n} *)0)->{f})), \"type of {n}.{f}: Rust says {}\");\n",
                ty.split_whitespace().collect::<Vec<_>>().join(" ").replace('"', "'")
            );
        }
        // every field of the C struct is declared: the last Rust field ends where the struct ends
        // (up to tail padding), and there are no gaps that a missing field could hide in.
        let mut prev_end = 0;
        for (f, off, size, _) in s.fields {
            c += &format!(
                "_Static_assert({off} - {prev_end} < _Alignof(__typeof__((({n} *)0)->{f})), \"{n}: a field before {f} is missing in Rust\");\n"
            );
            prev_end = off + size;
        }
        c += &format!("_Static_assert({} - {prev_end} < _Alignof({n}), \"{n}: a trailing field is missing in Rust\");\n", s.size);
    }
    for (name, ty) in rust_typedefs(src) {
        c += &format!("typedef {};\n", decl(&ty, &format!("rust_{name}")));
        c += &format!("_Static_assert(SAME(rust_{name}, {name}), \"typedef {name} differs from the header\");\n");
    }
    for (name, args, ret) in rust_functions(src) {
        c += &format!("typedef {};\n", fn_decl(&args, &ret, &format!("rust_fn_{name}")));
        c += &format!("_Static_assert(SAME(rust_fn_{name}, __typeof__({name})), \"prototype of {name} differs from the header\");\n");
    }
    c
}

fn rust_src() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap()
}

#[test]
fn every_header_function_is_declared() {
    let src = rust_src();
    let rust: BTreeSet<String> = rust_functions(&src).into_iter().map(|f| f.0).collect();
    let header = header_functions(&header_text());
    assert!(header.len() > 50, "header scan found only {} functions: the scanner is broken", header.len());
    let missing: Vec<_> = header.difference(&rust).collect();
    assert!(
        missing.is_empty(),
        "functions in hms_ffi.h without a Rust declaration: {missing:?}; add them to \
         bindings/rust/hms-ffi-sys/src/lib.rs (the C compiler check then verifies each prototype)"
    );
    let extra: Vec<_> = rust.difference(&header).collect();
    assert!(extra.is_empty(), "Rust declares functions the header does not have: {extra:?}");
}

#[test]
fn every_header_constant_is_declared() {
    let rust: BTreeSet<String> = CONSTANTS.iter().map(|c| c.0.to_string()).collect();
    let header = header_constants(&header_text());
    assert!(header.contains("HMS_UNAUTHENTICATED") && header.contains("HMS_FFI_ABI_VERSION"), "header scan is broken");
    let missing: Vec<_> = header.difference(&rust).collect();
    assert!(
        missing.is_empty(),
        "constants in hms_ffi.h without a Rust declaration: {missing:?}; add them to the c_consts! \
         block of bindings/rust/hms-ffi-sys/src/lib.rs (the C compiler check then verifies each value)"
    );
}

#[test]
fn declarations_match_the_header_in_the_c_compiler() {
    let c = generate_c(&rust_src());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join("hms_header_check.c");
    std::fs::write(&file, &c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-fsyntax-only", "-Wall", "-Werror"])
        .arg(format!("-I{}", include_dir().display()))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (set CC): {e}"));
    assert!(
        out.status.success(),
        "the Rust declarations disagree with hms_ffi.h ({}):\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // the check must have checked something
    assert!(c.matches("_Static_assert").count() > 300, "too few assertions generated");
}

#[test]
fn the_checker_catches_a_wrong_declaration() {
    // A checker that cannot fail proves nothing: feed it a drifted prototype, field and constant.
    let bad = "// BEGIN TYPEDEFS\n// END TYPEDEFS\n// BEGIN FUNCTIONS\n\
               pub fn hms_call_reply(call: *mut hms_call_t, data: *const u8, len: usize, content_type: u32, err: *mut hms_error_t) -> hms_status_t;\n\
               // END FUNCTIONS\n";
    let c = generate_c(bad);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join("hms_header_check_bad.c");
    std::fs::write(&file, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-fsyntax-only"])
        .arg(format!("-I{}", include_dir().display()))
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("prototype of hms_call_reply"), "drift not caught: {err}");
}

#[test]
fn library_agrees_with_the_declarations_at_run_time() {
    // The library we link was built from the same ABI and its own size queries agree.
    unsafe {
        assert_eq!(hms_ffi_sys::hms_abi_version(), hms_ffi_sys::HMS_FFI_ABI_VERSION);
        assert_eq!(hms_ffi_sys::hms_sizeof_error(), std::mem::size_of::<hms_ffi_sys::hms_error_t>());
        assert_eq!(hms_ffi_sys::hms_sizeof_payload(), std::mem::size_of::<hms_ffi_sys::hms_payload_t>());
        assert_eq!(hms_ffi_sys::hms_sizeof_node_options(), std::mem::size_of::<hms_ffi_sys::hms_node_options_t>());
        assert_eq!(hms_ffi_sys::hms_sizeof_connect_options(), std::mem::size_of::<hms_ffi_sys::hms_connect_options_t>());
        let v = std::ffi::CStr::from_ptr(hms_ffi_sys::hms_version_string()).to_str().unwrap();
        let want = format!(
            "{}.{}.{}",
            hms_ffi_sys::HMS_FFI_VERSION_MAJOR,
            hms_ffi_sys::HMS_FFI_VERSION_MINOR,
            hms_ffi_sys::HMS_FFI_VERSION_PATCH
        );
        assert_eq!(v, want);
    }
}
