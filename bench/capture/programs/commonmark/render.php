<?php
// render.php DIR...: renders every Markdown file under the directories
// (.md, and .md.gz as Debian compresses them) to HTML with
// league/commonmark's GitHub-flavoured converter (Debian:
// php-league-commonmark): tables, autolinks, task lists, strikethrough.
// Prints a summary line; exit status 1 if a file fails.
require_once 'League/CommonMark/autoload.php';

use League\CommonMark\GithubFlavoredMarkdownConverter;

$files = [];
foreach (array_slice($argv, 1) as $dir) {
    $it = new RecursiveIteratorIterator(new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS));
    foreach ($it as $f) {
        $name = $f->getFilename();
        if ($f->isFile() && (str_ends_with($name, '.md') || str_ends_with($name, '.md.gz'))) {
            $files[] = $f->getPathname();
        }
    }
}
sort($files);

$converter = new GithubFlavoredMarkdownConverter(['html_input' => 'escape', 'allow_unsafe_links' => false]);
$in = $out = $headings = 0;
foreach ($files as $path) {
    $md = str_ends_with($path, '.gz') ? gzdecode(file_get_contents($path)) : file_get_contents($path);
    if ($md === false) {
        fwrite(STDERR, "$path: cannot read\n");
        exit(1);
    }
    $html = (string) $converter->convert($md);
    $in += strlen($md);
    $out += strlen($html);
    $headings += preg_match_all('/<h[1-6][ >]/', $html);
}
printf("%d files, %d bytes of Markdown, %d bytes of HTML, %d headings\n", count($files), $in, $out, $headings);
