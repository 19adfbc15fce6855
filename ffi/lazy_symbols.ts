/**
 * A library's symbols, each bound on its first use.
 *
 * `Deno.dlopen` compiles a call trampoline for every symbol it is given,
 * about a quarter of a millisecond each. Measured here, medians of 20
 * interleaved runs: a script that opens libc with p2m's whole table costs
 * 44.2 ms of CPU, one that opens a single symbol 30.7 ms, an empty one
 * 29.5 ms. A receiver calls a dozen of the table's symbols, so binding
 * them one by one spares every process about 11 ms.
 *
 * @module
 */

/**
 * The symbols of `path` described by `table`, as `Deno.dlopen` would
 * return them, but each opened (`Deno.dlopen` of that one entry) when it
 * is first read. A missing library or `--allow-ffi` fails at that read.
 */
export function lazySymbols<const S extends Deno.ForeignLibraryInterface>(
  path: string,
  table: S,
): Deno.DynamicLibrary<S>["symbols"] {
  const symbols = {};
  for (const name of Object.keys(table)) {
    Object.defineProperty(symbols, name, {
      configurable: true,
      enumerable: true,
      get() {
        const entry = Deno.dlopen(path, { [name]: table[name] }).symbols[name];
        Object.defineProperty(symbols, name, { value: entry, enumerable: true });
        return entry;
      },
    });
  }
  return symbols as Deno.DynamicLibrary<S>["symbols"];
}
