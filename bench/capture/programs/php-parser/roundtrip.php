<?php
// roundtrip.php DIR...: parses every PHP file under the directories with
// nikic/PHP-Parser (Debian: php-parser), resolves names, prints the tree
// back to code and parses that again: the round trip that refactoring
// tools make on every file they touch. Prints a summary line; exit status
// 1 if a file does not parse, or its reprint parses to another tree shape.
require_once 'PhpParser/autoload.php';

use PhpParser\NodeTraverser;
use PhpParser\NodeVisitor\NameResolver;
use PhpParser\NodeFinder;
use PhpParser\ParserFactory;
use PhpParser\PrettyPrinter\Standard;

$files = [];
foreach (array_slice($argv, 1) as $dir) {
    $it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS));
    foreach ($it as $f) {
        if ($f->isFile() && $f->getExtension() === 'php') {
            $files[] = $f->getPathname();
        }
    }
}
sort($files);

$parser = (new ParserFactory())->create(ParserFactory::PREFER_PHP7);
$printer = new Standard();
$finder = new NodeFinder();
$bytesIn = $bytesOut = $nodes = 0;
$bad = 0;
foreach ($files as $path) {
    $code = file_get_contents($path);
    $bytesIn += strlen($code);
    try {
        $ast = $parser->parse($code);
        $traverser = new NodeTraverser();
        $traverser->addVisitor(new NameResolver());
        $ast = $traverser->traverse($ast);
        $out = $printer->prettyPrintFile($ast);
        $again = $parser->parse($out);
    } catch (PhpParser\Error $e) {
        fwrite(STDERR, "$path: {$e->getMessage()}\n");
        $bad++;
        continue;
    }
    $n = count($finder->findInstanceOf($ast, PhpParser\Node::class));
    // Name resolution turns names into fully qualified ones, so the second
    // tree has the same nodes, not the same node kinds everywhere.
    if ($n !== count($finder->findInstanceOf($again, PhpParser\Node::class))) {
        fwrite(STDERR, "$path: the reprint has another shape\n");
        $bad++;
    }
    $nodes += $n;
    $bytesOut += strlen($out);
}
printf("%d files, %d bytes in, %d nodes, %d bytes reprinted, %d bad\n", count($files), $bytesIn, $nodes, $bytesOut, $bad);
exit($bad ? 1 : 0);
