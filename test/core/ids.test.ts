import test from 'ava';
import { ID_PATTERN, newId, ulid } from '../../core/ids.js';

const BASE32 = /^[0-9abcdefghjkmnpqrstvwxyz]{26}$/;

test('ulids are 26 lower-case Crockford characters, unique and sorted in creation order, across many pool refills', (t) => {
  const start = Date.now() + 1_000_000; // later than any id made so far in this process
  const ids: string[] = [];
  // 300 new milliseconds (the random pool is refilled every 64), each with a few ids in the same millisecond.
  for (let ms = 0; ms < 300; ms++) for (let k = 0; k < 3; k++) ids.push(ulid(start + ms));
  t.true(ids.every((id) => BASE32.test(id)));
  t.is(new Set(ids).size, ids.length);
  t.deepEqual([...ids].sort(), ids);
  // The random parts of different milliseconds are not one counter: they are fresh draws.
  const randoms = new Set(ids.filter((_, i) => i % 3 === 0).map((id) => id.slice(10, 16)));
  t.true(randoms.size > 290, `distinct random prefixes: ${randoms.size}`);
  // The time part is the millisecond in base 32, most significant first.
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
  const decode = (s: string) => [...s].reduce((n, c) => n * 32 + alphabet.indexOf(c), 0);
  t.is(decode(ids[0]!.slice(0, 10)), start);
  t.is(decode(ids.at(-1)!.slice(0, 10)), start + 299);
});

test('an id made for an earlier clock reading still sorts after the last one (monotonic)', (t) => {
  const a = ulid(Date.now() + 2_000_000);
  const b = ulid(Date.now());
  t.true(b > a);
});

test('newId carries its prefix and passes the id pattern', (t) => {
  const id = newId('msg');
  t.regex(id, /^msg_[0-9a-z]{26}$/);
  t.regex(id, ID_PATTERN);
});
