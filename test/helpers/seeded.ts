/**
 * Random fault points that can be replayed: the seed comes from `env` (or is drawn), is printed as
 * `<env>=<seed>`, and drives mulberry32, a small generator whose sequence depends on the seed alone.
 */
export function seededRandom(env: string): () => number {
  const seed = Number(process.env[env] ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`${env}=${seed}`);
  return mulberry32(seed);
}

export function mulberry32(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
