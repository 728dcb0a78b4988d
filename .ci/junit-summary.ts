// Counts bun test's JUnit report and prints the one closing line CI reads:
// "N passed, N failed". Exits non-zero when a test failed or none ran.
const path = process.argv[2] ?? '.ci-out/junit.xml';
const file = Bun.file(path);
if (!(await file.exists())) {
  console.log(`no JUnit report at ${path}: the test run did not finish`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const xml = await file.text();
let passed = 0;
let failed = 0;
let skipped = 0;
const failures: string[] = [];
// A testcase is either self-closing or has children (<failure>, <skipped/>, ...).
for (const match of xml.matchAll(/<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g)) {
  const attributes = match[1] ?? '';
  const children = match[3] ?? '';
  if (/<(failure|error)\b/.test(children)) {
    failed++;
    const name = /\bname="([^"]*)"/.exec(attributes)?.[1] ?? '?';
    const where = /\bfile="([^"]*)"/.exec(attributes)?.[1] ?? '?';
    failures.push(`${where}: ${name}`);
  } else if (/<skipped\b/.test(children)) {
    skipped++;
  } else {
    passed++;
  }
}
if (failures.length > 0) console.log(`failed:\n  ${failures.join('\n  ')}`);
if (skipped > 0) console.log(`${skipped} skipped`);
if (passed + failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
