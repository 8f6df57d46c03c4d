import test from 'ava';
import { longerThan } from '../../core/domain.js';

test('longerThan counts code points: a surrogate pair is one character, a lone surrogate is one too', (t) => {
  t.false(longerThan('', 0));
  t.true(longerThan('a', 0));
  t.false(longerThan('abc', 3));
  t.true(longerThan('abcd', 3));
  t.false(longerThan('😀😀😀', 3), 'three emoji, six UTF-16 units');
  t.true(longerThan('😀😀😀a', 3));
  t.false(longerThan('a😀b', 3));
  t.false(longerThan('\ud800\ud800', 2), 'two lone high surrogates are two characters');
  t.true(longerThan('\ud800\ud800\ud800', 2));
  t.false(longerThan('\ud83d', 1));
  t.true(longerThan('x'.repeat(7), 3), 'past twice the limit in UTF-16 units, without counting');
  t.is(longerThan('😀'.repeat(10_000), 10_000), false);
  t.is(longerThan(`${'😀'.repeat(10_000)}!`, 10_000), true);
});
