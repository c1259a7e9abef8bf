<?php
// render.php DIR: renders an API reference of the PHP code under DIR with
// Twig (Debian: php-twig), the way a documentation site or a CMS page is
// made: the classes, their methods and doc comments are read with PHP's
// tokenizer, then an index page and one page per class are rendered from
// the templates beside this script (layout inheritance, includes, macros,
// loops, filters, auto-escaping). The templates are compiled at every run,
// as with Twig's cache off. Prints a summary line.
require_once 'Twig/autoload.php';

$dir = $argv[1] ?? null;
if ($dir === null || !is_dir($dir)) {
    fwrite(STDERR, "usage: render.php DIR\n");
    exit(2);
}

/** readClasses returns the classes, interfaces and traits of one file. */
function readClasses(string $path, string $rel): array
{
    $tokens = PhpToken::tokenize(file_get_contents($path));
    $classes = [];
    $ns = '';
    $doc = null;
    $class = null;
    $depth = 0;
    $classDepth = -1;
    $n = count($tokens);
    for ($i = 0; $i < $n; $i++) {
        $t = $tokens[$i];
        switch ($t->id) {
            case T_NAMESPACE:
                $ns = '';
                for ($i++; $i < $n && $tokens[$i]->text !== ';' && $tokens[$i]->text !== '{'; $i++) {
                    $ns .= trim($tokens[$i]->text);
                }
                break;
            case T_DOC_COMMENT:
                $doc = $t->text;
                break;
            case T_CLASS:
            case T_INTERFACE:
            case T_TRAIT:
                $j = $i + 1;
                while ($j < $n && $tokens[$j]->id === T_WHITESPACE) {
                    $j++;
                }
                if ($j < $n && $tokens[$j]->id === T_STRING) {
                    $class = [
                        'kind' => strtolower($t->text),
                        'name' => $tokens[$j]->text,
                        'namespace' => $ns,
                        'file' => $rel,
                        'line' => $t->line,
                        'summary' => summary($doc),
                        'methods' => [],
                    ];
                    $classDepth = $depth;
                }
                $doc = null;
                break;
            case T_FUNCTION:
                if ($class !== null) {
                    $j = $i + 1;
                    while ($j < $n && ($tokens[$j]->id === T_WHITESPACE || $tokens[$j]->text === '&')) {
                        $j++;
                    }
                    $name = $tokens[$j]->text ?? '';
                    $vis = 'public';
                    $static = false;
                    for ($k = $i - 1; $k >= 0 && $k > $i - 8; $k--) {
                        $id = $tokens[$k]->id;
                        if ($id === T_PRIVATE || $id === T_PROTECTED || $id === T_PUBLIC) {
                            $vis = strtolower($tokens[$k]->text);
                        } elseif ($id === T_STATIC) {
                            $static = true;
                        }
                    }
                    $params = '';
                    for ($j++; $j < $n && $tokens[$j]->text !== '('; $j++);
                    for ($p = 0, $j++; $j < $n; $j++) {
                        $s = $tokens[$j]->text;
                        if ($s === '(') {
                            $p++;
                        } elseif ($s === ')' && $p-- === 0) {
                            break;
                        }
                        $params .= $tokens[$j]->id === T_WHITESPACE ? ' ' : $s;
                    }
                    $class['methods'][] = [
                        'name' => $name,
                        'visibility' => $vis,
                        'static' => $static,
                        'params' => trim(preg_replace('/\s+/', ' ', $params)),
                        'summary' => summary($doc),
                        'line' => $t->line,
                    ];
                }
                $doc = null;
                break;
            case T_CURLY_OPEN:
            case T_DOLLAR_OPEN_CURLY_BRACES:
                $depth++;
                break;
            default:
                if ($t->text === '{') {
                    $depth++;
                } elseif ($t->text === '}') {
                    $depth--;
                    if ($class !== null && $depth === $classDepth) {
                        $classes[] = $class;
                        $class = null;
                    }
                } elseif ($t->text === ';' || $t->text === '}') {
                    $doc = null;
                }
        }
    }
    return $classes;
}

/** summary is a doc comment's first sentence. */
function summary(?string $doc): string
{
    if ($doc === null) {
        return '';
    }
    $lines = [];
    foreach (preg_split('/\R/', $doc) as $line) {
        $line = trim(preg_replace('#^\s*(/\*\*|\*/|\*)#', '', $line));
        if ($line === '' && $lines) {
            break;
        }
        if ($line !== '' && $line[0] !== '@') {
            $lines[] = $line;
        }
    }
    return implode(' ', $lines);
}

$files = [];
$it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS));
foreach ($it as $f) {
    if ($f->isFile() && $f->getExtension() === 'php') {
        $files[] = $f->getPathname();
    }
}
sort($files);
$classes = [];
foreach ($files as $path) {
    array_push($classes, ...readClasses($path, substr($path, strlen(rtrim($dir, '/')) + 1)));
}
usort($classes, fn ($a, $b) => [$a['namespace'], $a['name']] <=> [$b['namespace'], $b['name']]);

$twig = new Twig\Environment(new Twig\Loader\FilesystemLoader(__DIR__ . '/templates'), [
    'cache' => false,
    'autoescape' => 'html',
    'strict_variables' => true,
]);
$twig->addFilter(new Twig\TwigFilter('anchor', fn (string $s) => strtolower(preg_replace('/[^A-Za-z0-9]+/', '-', $s))));
$site = ['title' => basename($dir) . ' API', 'generated' => 'zmm capture'];

$bytes = strlen($twig->render('index.html.twig', ['site' => $site, 'classes' => $classes]));
$methods = 0;
foreach ($classes as $c) {
    $bytes += strlen($twig->render('class.html.twig', ['site' => $site, 'class' => $c, 'classes' => $classes]));
    $methods += count($c['methods']);
}
printf("%d files, %d classes, %d methods, %d bytes of HTML\n", count($files), count($classes), $methods, $bytes);
